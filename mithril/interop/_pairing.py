"""Pairing a torch ``state_dict``'s entries with a compiled model's keys (names before shapes).

The stages run in this order; each sees only what the earlier ones left:

1. ``mapping``: explicit pairs, tensor or layer prefix;
2. ``name``: equal keys;
3. ``suffix``: one key is a dotted suffix of the other (``module.fc.weight`` /
   ``fc.weight``), when that relation is one-to-one;
4. ``layer`` / ``layer-shape``: a Mithril layer (the tensors under one prefix) and a torch
   module whose leaf names and shapes (then shapes alone) agree, when that signature is
   unique on both sides, or when every torch module sharing it holds equal values (any
   assignment then gives the same outputs);
5. ``shape``: single tensors whose shape is unique on both sides.

Where several layers share a signature and their values differ, pairing them by order is a
guess: those pairs are recorded as *ambiguous* (loaded only with ``strict=False``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Shape = tuple[int, ...]


@dataclass
class Entry:
    """One tensor on either side: its full key, layer prefix, leaf name and shape."""

    name: str
    group: str
    leaf: str
    shape: Shape
    value: Any = None  # torch side: the NumPy array (a copy)
    dtype: str = ""
    used: bool = False


def entry(name: str, shape: Any, value: Any = None, dtype: str = "") -> Entry:
    group, _, leaf = name.rpartition(".")
    return Entry(name, group, leaf, tuple(int(d) for d in shape), value, dtype)


Pair = Callable[[Entry, Entry, str], None]


def groups(entries: list[Entry]) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for e in entries:
        out.setdefault(e.group, []).append(e)
    return out


def by_mapping(mapping: Mapping[str, str], ours: list[Entry], theirs: list[Entry], pair: Pair,
               errors: list[str]) -> None:
    mine = {e.name: e for e in ours}
    other = {e.name: e for e in theirs}
    my_groups, their_groups = groups(ours), groups(theirs)
    for mkey, tname in mapping.items():
        if mkey in mine:
            if tname not in other:
                errors.append(f"{mkey!r} -> {tname!r}: the torch state_dict has no entry "
                              f"{tname!r}")
            elif mine[mkey].used or other[tname].used:
                errors.append(f"{mkey!r} -> {tname!r}: one of them is already paired")
            else:
                pair(mine[mkey], other[tname], "mapping")
        elif mkey in my_groups:
            if tname not in their_groups:
                errors.append(f"layer {mkey!r} -> {tname!r}: the torch state_dict has no "
                              f"module {tname!r}")
                continue
            leaves = {e.leaf: e for e in their_groups[tname] if not e.used}
            for e in my_groups[mkey]:
                if not e.used and e.leaf in leaves:
                    pair(e, leaves.pop(e.leaf), "mapping")
        else:
            errors.append(f"{mkey!r} -> {tname!r}: the compiled model has no parameter, state "
                          f"or layer {mkey!r}")


def by_name(ours: list[Entry], theirs: list[Entry], pair: Pair) -> None:
    other = {e.name: e for e in theirs if not e.used}
    for e in ours:
        o = other.get(e.name)
        if not e.used and o is not None and not o.used:
            pair(e, o, "name")


def _suffix_related(a: str, b: str) -> bool:
    return a.endswith("." + b) or b.endswith("." + a)


def by_suffix(ours: list[Entry], theirs: list[Entry], pair: Pair) -> None:
    left = [e for e in ours if not e.used]
    right = [e for e in theirs if not e.used]
    mine = {e.name: [o for o in right if _suffix_related(e.name, o.name)] for e in left}
    back: dict[str, int] = {}
    for cands in mine.values():
        for o in cands:
            back[o.name] = back.get(o.name, 0) + 1
    for e in left:
        cands = mine[e.name]
        if len(cands) == 1 and back[cands[0].name] == 1:
            pair(e, cands[0], "suffix")


def _signature(group: list[Entry], use_leaves: bool) -> Any:
    if use_leaves:
        return frozenset((e.leaf, e.shape) for e in group)
    return tuple(sorted(e.shape for e in group))


def _aligned(mine: list[Entry], other: list[Entry], use_leaves: bool) -> list[tuple[Entry, Entry]]:
    if use_leaves:
        leaves = {e.leaf: e for e in other}
        return [(e, leaves[e.leaf]) for e in mine]
    return list(zip(sorted(mine, key=lambda e: e.shape), sorted(other, key=lambda e: e.shape),
                    strict=True))


def _same_values(candidates: list[list[Entry]], use_leaves: bool) -> bool:
    first = candidates[0]
    for other in candidates[1:]:
        for a, b in _aligned(first, other, use_leaves):
            if a.value.dtype != b.value.dtype or not np.array_equal(a.value, b.value):
                return False
    return True


def by_layer(ours: list[Entry], theirs: list[Entry], pair: Pair, use_leaves: bool,
             ambiguous: list[tuple[str, str]]) -> None:
    """Pair layers by signature; a signature shared by several layers pairs them in order
    only when their torch values are equal, else records the order pairs as ambiguous."""
    how = "layer" if use_leaves else "layer-shape"
    my_groups = [[e for e in g if not e.used] for g in groups(ours).values()]
    their_groups = [[e for e in g if not e.used] for g in groups(theirs).values()]
    classes: dict[Any, tuple[list[list[Entry]], list[list[Entry]]]] = {}
    for g in my_groups:
        if g:
            classes.setdefault(_signature(g, use_leaves), ([], []))[0].append(g)
    for g in their_groups:
        if g:
            sig = _signature(g, use_leaves)
            if sig in classes:
                classes[sig][1].append(g)
    for mine, other in classes.values():
        if not other:
            continue
        if len(mine) == len(other) == 1:
            for a, b in _aligned(mine[0], other[0], use_leaves):
                pair(a, b, how)
        elif _same_values(other, use_leaves):
            for m, o in zip(mine, other, strict=False):
                for a, b in _aligned(m, o, use_leaves):
                    pair(a, b, f"{how}-equal")
        elif len(mine) == len(other):
            for m, o in zip(mine, other, strict=True):
                ambiguous.append((m[0].group, o[0].group))
                for a, b in _aligned(m, o, use_leaves):
                    pair(a, b, "order")


def by_shape(ours: list[Entry], theirs: list[Entry], pair: Pair) -> None:
    left = [e for e in ours if not e.used]
    right = [e for e in theirs if not e.used]
    for e in left:
        mine = [x for x in left if x.shape == e.shape]
        other = [o for o in right if o.shape == e.shape and not o.used]
        if len(mine) == 1 and len(other) == 1:
            pair(e, other[0], "shape")


def diagnose_leftovers(ours: list[Entry], theirs: list[Entry], pair: Pair) -> None:
    """Pair what is left of layers that correspond by leaf names, tensor by tensor.

    A leftover Mithril layer takes the leftover torch module with the same leaf names whose
    shapes agree with its own in the most dims, when one is best (shapes may differ: those
    become shape mismatches, never loaded), or else the only one whose leaf names contain or
    are contained in its own with equal shapes on the common leaves. Tensors paired here are
    loaded as ``"layer-partial"``.
    """
    their_groups = [[e for e in g if not e.used] for g in groups(theirs).values()]
    for group in groups(ours).values():
        mine = {e.leaf: e for e in group if not e.used}
        if not mine:
            continue
        live = [{e.leaf: e for e in g if not e.used} for g in their_groups]
        same = [o for o in live if o and set(o) == set(mine)]
        scores = [_agreement(mine, o) for o in same]
        best = [o for o, s in zip(same, scores, strict=True) if s == max(scores, default=0)]
        nested = [o for o in live if _nested_with_equal_shapes(mine, o)]
        chosen = best[0] if len(best) == 1 else nested[0] if len(nested) == 1 else None
        if chosen is not None:
            for leaf, e in mine.items():
                if leaf in chosen:
                    pair(e, chosen[leaf], "layer-partial")


def _agreement(mine: dict[str, Entry], other: dict[str, Entry]) -> int:
    return sum(a == b for leaf, e in mine.items()
               for a, b in zip(e.shape, other[leaf].shape, strict=False))


def _nested_with_equal_shapes(mine: dict[str, Entry], other: dict[str, Entry]) -> bool:
    common = set(mine) & set(other)
    nested = set(mine) <= set(other) or set(other) <= set(mine)
    return bool(common) and nested and all(mine[k].shape == other[k].shape for k in common)
