"""``Scan``: a Mithril model applied over an axis with a carry (``jax.lax.scan`` as a layer).

See ``mithril/framework/scan.py`` for how each backend runs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import ArgumentError, ShapeMismatchError, TerminalError
from ..framework.logical.base import BaseModel
from ..framework.logical.meta import set_attr
from ..framework.logical.model import Operator
from ..framework.scan import BODIES, ScanBody, make_opdef, new_key


class Scan(Operator):
    """Apply ``body`` at every step of an axis, carrying state from step to step.

    Like ``jax.lax.scan(f, init, xs)``: ``carry`` maps each carry input of ``body`` to the
    body output that is its next value; ``xs`` are the body inputs taken one slice per step
    along ``axis``; ``ys`` the body outputs stacked along ``axis``. Every other input of the
    body (its parameters) is an input of the ``Scan``, the same at every step: left unconnected,
    it is a trainable parameter of the outer model, named ``<scan's name>.<body terminal>``.

    Terminals keep the body's names: the carry inputs (initial carry), the per-step inputs with
    the loop axis added, the parameters; outputs: the carry outputs (the final carry) and the
    per-step outputs with the loop axis (``<name>_seq`` for one that is also a carry output, whose
    name gives the final carry). The loop's length stays a symbol: one compiled model
    serves any length, and the body is compiled once, never unrolled.

    The body's next carry must have the shape of its carry: ``ShapeMismatchError`` otherwise.
    A body with random primitives (dropout) or state (running statistics) raises
    ``ArgumentError``.
    ``body_id`` is the id generated code passes to the ``scan`` kernel; leave it out (``to_dict``
    stores it so that ``Model.from_dict`` gives the same one back).

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril import IOKey
    >>> from mithril.models import Add, Linear, Model, Scan, Tanh
    >>> cell = Model()
    >>> cell |= Linear(4)(input=IOKey("x", shape=["N", 3]), output="a")
    >>> cell |= Linear(4, use_bias=False)(input=IOKey("h", shape=["N", 4]), output="b")
    >>> cell |= Add()(left="a", right="b", output="s")
    >>> cell |= Tanh()(input="s", output=IOKey("h_next"))
    >>> rnn = Model()
    >>> rnn |= Scan(cell, carry={"h": "h_next"}, xs=["x"], ys=["h_next"])(
    ...     h="h0", x="seq", h_next=IOKey("h_last"), h_next_seq=IOKey("h_next_seq"))
    >>> pm = ml.compile(rnn, ml.NumpyBackend(dtype=ml.float64), jit=False)
    >>> params = pm.randomize_params()
    >>> out = pm.evaluate(params, {"h0": np.zeros((2, 4)), "seq": np.ones((5, 2, 3))})
    >>> out["h_last"].shape, out["h_next_seq"].shape
    ((2, 4), (5, 2, 4))
    """

    def __init__(self, body: BaseModel, carry: Mapping[str, str], xs: Sequence[str] = (),
                 ys: Sequence[str] = (), axis: int = 0, name: str | None = None,
                 body_id: int | None = None) -> None:
        if not isinstance(body, BaseModel):
            raise ArgumentError(f"Scan needs a Mithril model as its body, got "
                                f"{type(body).__name__}")
        inputs, outputs = list(body.input_terminals()), list(body.output_terminals())
        pairs = list(dict(carry).items())
        for c_in, c_out in pairs:
            if c_in not in inputs:
                raise TerminalError(f"Scan: carry {c_in!r} is not an input of body {body.path}; "
                                    f"inputs: {', '.join(inputs)}")
            if c_out not in outputs:
                raise TerminalError(f"Scan: carry output {c_out!r} is not an output of body "
                                    f"{body.path}; outputs: {', '.join(outputs)}")
        for k in xs:
            if k not in inputs:
                raise TerminalError(f"Scan: per-step input {k!r} is not an input of body "
                                    f"{body.path}; inputs: {', '.join(inputs)}")
        for k in ys:
            if k not in outputs:
                raise TerminalError(f"Scan: per-step output {k!r} is not an output of body "
                                    f"{body.path}; outputs: {', '.join(outputs)}")
        if not xs:
            raise ArgumentError("Scan needs at least one per-step input (xs) to take the "
                                "length of the loop from")
        _check_body(body)
        carry_ins = [c for c, _ in pairs]
        params = [k for k in inputs if k not in carry_ins and k not in xs]
        shapes = body.shapes
        for c_in, c_out in pairs:
            a, b = shapes.get(c_in), shapes.get(c_out)
            if _clash(a, b):
                raise ShapeMismatchError(
                    f"Scan of body {body.path}: the next carry {c_out!r} has shape {b}, but the "
                    f"carry {c_in!r} it replaces has shape {a}; a carry must keep its shape")
        key = new_key() if body_id is None else int(body_id)
        spec = ScanBody(body, pairs, list(xs), list(ys), params, axis, key)
        BODIES[key] = spec
        self.spec = spec
        iface = body.interface()
        kinds = {k: c.meta.root().kinds for k, c in iface.items()}
        super().__init__(make_opdef(spec, shapes, kinds), name=name)
        # the body's parameters stay parameters (with their initialisers) one level up
        for k in params:
            src, dst = iface[k].meta.root(), self.conns[k].meta.root()
            for attr in ("differentiable", "init"):
                if getattr(src, attr) is not None and getattr(dst, attr) is None:
                    set_attr(dst, attr, getattr(src, attr))

    def _serial_kwargs(self) -> dict[str, int]:
        """What ``to_dict`` stores beside the constructor's arguments: the body's id."""
        return {"body_id": self.spec.key}


def _check_body(body: BaseModel) -> None:
    """What a body cannot hold, said when the layer is made: random primitives (dropout) and
    state (running statistics)."""
    from ..framework.physical.graph import flatten
    from ..framework.shapes import Trail

    with Trail() as trail:
        try:
            nodes = flatten(body).nodes
        finally:
            trail.rollback()
    for node in nodes:
        if node.op.random or node.op.state:
            what = "random primitive" if node.op.random else "primitive with state"
            raise ArgumentError(f"Scan: body {body.path} holds {what} {node.op.name!r} at "
                                f"{node.path}, which a Scan body cannot hold")


def _clash(a: list | None, b: list | None) -> bool:
    """Do two body shapes (ints and symbol names) certainly differ?"""
    if a is None or b is None:
        return False
    if any(isinstance(d, str) and d.startswith("(") for d in (*a, *b)):
        return False
    if len(a) != len(b):
        return True
    return any(isinstance(x, int) and isinstance(y, int) and x != y
               for x, y in zip(a, b, strict=True))


__all__ = ["Scan"]
