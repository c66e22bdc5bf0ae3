"""Shrunk failing examples of the random model generator, kept as explicit tests."""
