"""``add_op``: add one catalogue primitive to a model and get its output connection (for the
layers built from primitives: pooling, resizing, transposed convolutions)."""

from __future__ import annotations

from typing import Any

from ..framework.logical.meta import TBD
from ..framework.logical.model import Connection, IOKey, Model, Operator
from ..framework.ops import CATALOGUE, SCALAR


def add_op(model: Model, name: str, out: IOKey | str | None = None, n: int | None = None,
           **terms: Any) -> Connection:
    """Add catalogue primitive ``name`` to ``model`` and return its (first) output.

    Scalar terminals given as plain values become the primitive's constants; connections,
    keys and names are wired.

    >>> from mithril.models import IOKey, Model
    >>> m = Model()
    >>> y = add_op(m, "relu", input=IOKey("input", shape=[3]))
    >>> add_op(m, "multiply", out=IOKey("output"), left=y, right=2.0).key
    'output'
    """
    opdef = CATALOGUE[name]
    scalars = {t.name for t in opdef.inputs if t.kind == SCALAR}
    values = {k: v for k, v in terms.items()
              if k in scalars and not isinstance(v, Connection | IOKey | str)}
    wires = {k: v for k, v in terms.items() if k not in values}
    prim = Operator(opdef, n_inputs=n, **values, **{k: TBD for k in wires if k in scalars})
    out_name = opdef.output_names[0]
    if out is not None:
        wires[out_name] = out
    model |= prim(**wires)
    return model.bindings[id(prim)][out_name]
