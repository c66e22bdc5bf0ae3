"""Data helpers under the reference Mithril's module path (``mithril.utils.utils``)."""

from .utils import pack_data_into_time_slots, unpack_time_slot_data

__all__ = ["pack_data_into_time_slots", "unpack_time_slot_data"]
