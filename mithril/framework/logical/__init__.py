"""Logical models: what is computed, with no backend involved."""
