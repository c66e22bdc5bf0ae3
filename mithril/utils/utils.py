"""The reference Mithril's time-slot helpers for variable-length sequence batches.

A batch of sequences of different lengths is fed to the size-free recurrent models
(``ManyToOne(RNNCell(), T)``, ``EncoderDecoder(LSTMCell(), ...)``) one time step at a time:
the sequences are sorted by length (longest first) and step ``t`` gets one ``(N_t, 1, d)``
tensor holding element ``t`` of the ``N_t`` sequences longer than ``t``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from ..errors import ArgumentError
from ..types import int32

__all__ = ["pack_data_into_time_slots", "unpack_time_slot_data"]


def _length(seq: Any) -> int:
    return int(seq.shape[0])


def pack_data_into_time_slots(data: Sequence[Sequence[Any]], backend: Any,
                              lengths: Any = None, key: tuple[str, ...] = ("input",),
                              index: int = 0, return_indices: bool = False,
                              sorted_data: bool = False) -> tuple[Any, ...]:
    """Pack element ``index`` of every sample of ``data`` into time slots.

    ``data`` is a list of samples, each a tuple of backend tensors; ``data[i][index]`` is a
    sequence ``(L_i, d)``. Unless ``sorted_data``, the samples are sorted by that length,
    longest first (a stable sort: equal lengths keep their order). The result maps
    ``f"{key[0]}{t}"`` (``t < max L_i``) to a ``(N_t, 1, d)`` tensor: element ``t`` of the
    ``N_t`` sorted sequences longer than ``t``. ``lengths`` (optional) gives the ``L_i``.

    Returns ``(time_slots, sorted_samples)``, or with ``return_indices=True``
    ``(indices, time_slots, sorted_samples)`` where ``indices[j]`` is the position in
    ``data`` of the ``j``-th sorted sample (``PermuteTensor``'s ``indices`` that reorder
    per-sample results from ``data``'s order into the sorted one).

    >>> import mithril as ml
    >>> from mithril.utils.utils import pack_data_into_time_slots
    >>> b = ml.NumpyBackend(dtype=ml.float64)
    >>> data = [(b.array([[1.0], [2.0]]),), (b.array([[3.0], [4.0], [5.0]]),)]
    >>> idx, slots, ordered = pack_data_into_time_slots(data, b, return_indices=True)
    >>> idx, {k: v[:, 0, 0].tolist() for k, v in slots.items()}
    ([1, 0], {'input0': [3.0, 1.0], 'input1': [4.0, 2.0], 'input2': [5.0]})
    """
    samples = list(data)
    if not samples:
        raise ArgumentError("pack_data_into_time_slots got no samples")
    if lengths is None:
        lens = [_length(s[index]) for s in samples]
    else:
        lens = [int(v) for v in (lengths.tolist() if hasattr(lengths, "tolist")
                                 else lengths)]
        if len(lens) != len(samples):
            raise ArgumentError(f"pack_data_into_time_slots: {len(lens)} lengths for "
                                f"{len(samples)} samples")
    if sorted_data:
        order = list(range(len(samples)))
        if any(a < b for a, b in pairwise(lens)):
            raise ArgumentError(f"pack_data_into_time_slots: sorted_data=True but the "
                                f"lengths {lens} are not in decreasing order")
    else:
        order = sorted(range(len(samples)), key=lambda i: -lens[i])
    ordered = [samples[i] for i in order]
    sorted_lens = [lens[i] for i in order]
    slots: dict[str, Any] = {}
    for t in range(sorted_lens[0]):
        rows = [s[index][t] for s, n in zip(ordered, sorted_lens, strict=True) if n > t]
        stacked = backend.stack(rows, axis=0)
        slots[f"{key[0]}{t}"] = stacked.reshape(len(rows), 1, *stacked.shape[1:])
    if return_indices:
        return order, slots, ordered
    return slots, ordered


def unpack_time_slot_data(backend: Any, data: dict[str, Any], max_length: int,
                          max_size: int, output_dim: int, key: str = "decoder_out",
                          indices: Sequence[int] | None = None) -> Any:
    """The inverse of :func:`pack_data_into_time_slots` for model outputs: the slots
    ``f"{key}{t}"`` (``t < max_length``, each ``(N_t, 1, output_dim)``, missing ones
    skipped) padded with zeros to ``max_size`` rows and laid side by side, a
    ``(max_size, steps, output_dim)`` tensor (row ``j`` is sorted sequence ``j``). With
    ``indices`` (as returned by ``pack_data_into_time_slots``) the rows go back to the
    unsorted order: row ``indices[j]`` of the result is sorted row ``j``.

    >>> import mithril as ml
    >>> from mithril.utils.utils import unpack_time_slot_data
    >>> b = ml.NumpyBackend(dtype=ml.float64)
    >>> out = {"output0": b.array([[[1.0]], [[2.0]]]), "output1": b.array([[[3.0]]])}
    >>> unpack_time_slot_data(b, out, 2, 2, 1, key="output")[..., 0].tolist()
    [[1.0, 3.0], [2.0, 0.0]]
    """
    parts = []
    for t in range(max_length):
        name = f"{key}{t}"
        if name not in data:
            continue
        slot = data[name]
        rows = int(slot.shape[0])
        if rows > max_size:
            raise ArgumentError(f"unpack_time_slot_data: {name!r} has {rows} rows, more "
                                f"than max_size={max_size}")
        slot = slot.reshape(rows, output_dim)
        parts.append(backend.pad(slot, ((0, max_size - rows), (0, 0))))
    if not parts:
        raise ArgumentError(f"unpack_time_slot_data: no {key!r}0 ... {key!r}"
                            f"{max_length - 1} in the data (keys: {sorted(data)})")
    out = backend.stack(parts, axis=1)
    if indices is not None:
        inverse = [0] * len(indices)
        for j, i in enumerate(indices):
            inverse[int(i)] = j
        out = out[backend.array(inverse, dtype=int32)]
    return out
