"""The generic loop: a Mithril model (the *body*) applied over an axis with a carry.

``Scan`` (``mithril/models/scan.py``) adds one node of primitive ``scan`` to a model. Its
terminals are the body's: the carries (``h`` in, the body's next-carry output out: the final
carry), the per-step inputs with one more axis (the loop axis, a symbol: one compiled model
serves any length), the body's other inputs (parameters, shared by every step) and the per-step
outputs stacked along the loop axis. The primitive is not one entry of the catalogue: each
``Scan`` makes its own :class:`OpDef` named ``scan`` (its terminals are its body's), and every
backend registers one ``scan`` kernel (``mithril/backends/registry.py``: ``EXTRA_KERNELS``) that
reads the body from :data:`BODIES` by the integer the node passes first.

The body is compiled **once** per backend by the project's own code writer (never unrolled):
:meth:`ScanBody.functions` turns it into a step function, which the kernels run

- with ``jax.lax.scan`` on JAX (one trace of the body whatever the length);
- in a Python loop on PyTorch and MLX (autograd gives the gradients);
- in a NumPy loop whose training variant keeps each step's cache, and whose VJP runs the body's
  generated backward step by step in reverse, summing the parameters' gradients.

>>> from mithril.framework.scan import BODIES
>>> isinstance(BODIES, dict)
True
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CompileError
from . import types as T
from .logical.base import BaseModel
from .logical.meta import SCALAR, Meta
from .ops.base import OpDef, Term
from .rules import out_kinds, set_shape
from .shapes import Dim, Trail

#: the bodies of every ``Scan`` made in this process, by the id its node passes to the kernel
BODIES: dict[int, ScanBody] = {}


@dataclass
class ScanBody:
    """One ``Scan``'s body and how its terminals map onto the loop.

    ``carry`` pairs each carry input of the body with its next-carry output; ``xs`` are the
    per-step inputs, ``ys`` the per-step outputs, ``params`` the body's other inputs (the same at
    every step), ``axis`` the loop axis of the per-step inputs and outputs.
    """

    body: BaseModel
    carry: list[tuple[str, str]]
    xs: list[str]
    ys: list[str]
    params: list[str]
    axis: int
    key: int = 0
    _fns: dict[Any, tuple[Callable[..., Any], Callable[..., Any] | None,
                          Callable[..., Any] | None]] = field(default_factory=dict)

    def functions(self, table: dict[str, Callable[..., Any]], manual_gradients: bool
                  ) -> tuple[Callable[..., Any], Callable[..., Any] | None,
                             Callable[..., Any] | None]:
        """The body compiled for a backend's kernel ``table``, once: ``(forward,
        forward_train, backward)``, the last two only with ``manual_gradients`` (NumPy).

        ``forward(inputs) -> outputs`` maps the body's input names to arrays and back;
        ``forward_train`` also returns the step's cache, which ``backward(cache, grads,
        inputs)`` reads to give the gradients of every body input.
        """
        cache_key = (id(table.get("add")), manual_gradients)
        fns = self._fns.get(cache_key)
        if fns is None:
            fns = _compile_body(self, table, manual_gradients)
            self._fns[cache_key] = fns
        return fns


def _compile_body(spec: ScanBody, table: dict[str, Callable[..., Any]],
                  manual_gradients: bool) -> tuple[Callable[..., Any],
                                                   Callable[..., Any] | None,
                                                   Callable[..., Any] | None]:
    from .physical.codegen import CodeWriter, write_backward
    from .physical.compile import decide_open_kinds
    from .physical.graph import flatten
    from .physical.passes import build_program

    body = spec.body
    outputs = list(dict.fromkeys([c for _, c in spec.carry] + spec.ys))  # each once
    inputs = [c for c, _ in spec.carry] + spec.xs + spec.params
    with Trail() as trail:
        try:
            graph = flatten(body)
            decide_open_kinds(graph, body)
            discard = set(graph.outputs) - set(outputs)
            program = build_program(graph, inference=False, trainable_keys=[
                k for k in inputs if k in graph.inputs], discard_keys=discard)
            if program.consts and any(v.root.kind != SCALAR for v in program.consts.values()):
                raise CompileError(f"scan body {body.path}: constant arrays in a body are not "
                                   "supported; pass them as inputs")
            if program.state:
                raise CompileError(f"scan body {body.path}: a body with state (running "
                                   f"statistics: {sorted(program.state)}) is not supported")
            fwd_variants = {k[:-4] for k in table if k.endswith("_fwd")} \
                if manual_gradients else set()
            writer = CodeWriter(program, set(table), {}, fwd_variants=fwd_variants)
            if writer.random_nodes:
                raise CompileError(f"scan body {body.path}: random primitives (dropout) in a "
                                   "body are not supported")
            fwd_src, _ = writer.forward("forward", with_cache=False)
            train_src = back_src = None
            needed: list[str] = []
            if manual_gradients:
                writer.forward("forward_train", True, [])  # names the kernels' caches
                back_src, needed = write_backward(writer, outputs)
                train_src, _ = writer.forward("forward_train", True, needed)
            param_keys = list(program.params)
            consts = {k: v.root.value for k, v in program.consts.items()}
        finally:
            trail.rollback()
    ns: dict[str, Any] = dict(table)
    for name, dt in T.DTYPES.items():
        ns[f"dtype_{name}"] = dt
    ns["constants"] = consts
    ns["zeros_like"] = table.get("zeros_like", np.zeros_like)
    ns["__builtins__"] = __builtins__
    exec(compile(fwd_src, f"<mithril-scan-body-{spec.key}>", "exec"), ns)
    raw = ns["forward"]
    keys = [k for k in inputs if k in param_keys]

    def forward(values: dict[str, Any]) -> dict[str, Any]:
        return raw({k: values[k] for k in keys}, {}, {}, None)[0]

    if not manual_gradients:
        return forward, None, None
    assert train_src is not None and back_src is not None
    exec(compile(train_src + back_src, f"<mithril-scan-body-{spec.key}-train>", "exec"), ns)
    raw_train, raw_back = ns["forward_train"], ns["backward"]

    def forward_train(values: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        outs, _, cache = raw_train({k: values[k] for k in keys}, {}, {}, None)
        return outs, cache

    def backward(cache: Any, grads: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        return raw_back(cache, grads, {k: values[k] for k in keys})

    return forward, forward_train, backward


def _pattern(shape: Any) -> list[int | str] | None:
    """A body terminal's shape as ints and symbol names, None when its rank is open."""
    if shape is None or any(isinstance(d, str) and d.startswith("(") for d in shape):
        return None
    return list(shape)


def make_opdef(spec: ScanBody, shapes: dict[str, Any], kinds: dict[str, int]) -> OpDef:
    """The ``scan`` node of one ``Scan``: its terminals and its shape rule from the body's
    ``shapes`` (``body.shapes`` when the layer was made) and ``kinds`` (its terminals' types:
    token ids stay integers)."""
    carry_in = [c for c, _ in spec.carry]
    carry_out = [c for _, c in spec.carry]
    in_names = carry_in + spec.xs + spec.params
    ys_outer = outer_ys(spec)
    out_names = carry_out + ys_outer
    patterns = {k: _pattern(shapes.get(k)) for k in (*in_names, *carry_out, *spec.ys)}
    patterns.update({o: patterns[y] for y, o in zip(spec.ys, ys_outer, strict=True)})
    # the carry's shape: what the body says of its input, or else of its output
    carry_pat = {c_in: patterns[c_in] if patterns[c_in] is not None else patterns[c_out]
                 for c_in, c_out in spec.carry}
    # a next carry has its carry's shape: its symbols are the carry's (the body's own inference
    # may not know it, e.g. after a broadcast)
    alias: dict[str, int | str] = {}
    for c_in, c_out in spec.carry:
        a, b = patterns[c_in], patterns[c_out]
        if a is not None and b is not None and len(a) == len(b):
            alias.update((y, x) for x, y in zip(a, b, strict=True)
                         if isinstance(y, str) and y != x)
    axis = spec.axis
    out_kind = {c: kinds.get(c, T.FLOAT) for c in carry_out}
    out_kind.update({o: kinds.get(y, T.FLOAT) for y, o in zip(spec.ys, ys_outer, strict=True)})

    def rule(*metas: Meta) -> bool:
        m = dict(zip(("body", *in_names, *out_names), metas, strict=True))
        syms: dict[str, Dim] = {}
        t_dim = Dim()

        def dims(pattern: Sequence[int | str]) -> list[Dim | int]:
            items = [alias.get(d, d) if isinstance(d, str) else d for d in pattern]
            return [d if isinstance(d, int) else syms.setdefault(d, Dim()) for d in items]

        for key in out_names:
            out_kinds(m[key], out_kind[key])
        for (c_in, c_out) in spec.carry:
            pat = carry_pat[c_in]
            if pat is not None:
                set_shape(m[c_in], dims(pat))
                set_shape(m[c_out], dims(pat))
        for key in spec.params:
            pat = patterns[key]
            if pat is not None:
                set_shape(m[key], dims(pat))
        for key in (*spec.xs, *ys_outer):
            pat = patterns[key]
            if pat is None:
                continue
            full: list[Dim | int] = dims(pat)
            full.insert(axis if axis >= 0 else len(full) + 1 + axis, t_dim)
            set_shape(m[key], full)
        # all per-step inputs and outputs share the loop's length
        for key in (*spec.xs, *ys_outer):
            if patterns[key] is None:
                continue
            rank = len(patterns[key]) + 1  # type: ignore[arg-type]
            ax = axis if axis >= 0 else rank + axis
            set_shape(m[key], [t_dim if i == ax else None for i in range(rank)])
        return all(p is not None for p in patterns.values())

    terms = [Term("body", SCALAR, T.INT, default=spec.key, differentiable=False)]
    terms += [Term(k, kinds=kinds.get(k, T.FLOAT)) for k in in_names]
    outs = tuple(Term(k, kinds=out_kind[k]) for k in out_names)
    return OpDef("scan", tuple(terms), outs, rule,
                 doc=f"scan of body {spec.body.path} over axis {axis}")


def outer_ys(spec: ScanBody) -> list[str]:
    """The ``Scan``'s names of the stacked per-step outputs: the body's, but
    ``<name>_seq`` for a per-step output that is also a carry (its final value keeps the
    name)."""
    carry_out = {c for _, c in spec.carry}
    return [f"{y}_seq" if y in carry_out else y for y in spec.ys]


def new_key() -> int:
    """A fresh id for :data:`BODIES` (random, so an id stored by ``to_dict`` and read back in
    another process does not meet one made there)."""
    while True:
        key = secrets.randbits(47) + 1
        if key not in BODIES:
            return key


# ---- the loops the backends' ``scan`` kernels run ----------------------------------------

def _split(spec: ScanBody, args: tuple[Any, ...]) -> tuple[list[Any], list[Any], dict[str, Any]]:
    n_c, n_x = len(spec.carry), len(spec.xs)
    carries = list(args[:n_c])
    xs = list(args[n_c:n_c + n_x])
    params = dict(zip(spec.params, args[n_c + n_x:], strict=True))
    return carries, xs, params


def _result(spec: ScanBody, carries: list[Any], ys: list[Any]) -> Any:
    out = (*carries, *ys)
    return out if len(out) != 1 else out[0]


def python_loop(table: dict[str, Callable[..., Any]], key: int, *args: Any) -> Any:
    """The loop in Python with the backend's own kernels (PyTorch, MLX; NumPy's inference).

    Steps index the per-step inputs with ``indexer`` and stack the outputs with ``stack``
    (or ``unsqueeze`` + ``concat``), so autograd sees an ordinary graph.
    """
    spec = BODIES[key]
    forward, _, _ = spec.functions(table, False)
    carries, xs, params = _split(spec, args)
    n_t = _length(spec, xs)
    ys: list[list[Any]] = [[] for _ in spec.ys]
    for t in range(n_t):
        values = dict(params)
        values.update(zip((c for c, _ in spec.carry), carries, strict=True))
        values.update((k, _take(table, x, spec.axis, t)) for k, x in zip(spec.xs, xs,
                                                                         strict=True))
        outs = forward(values)
        carries = [outs[c] for _, c in spec.carry]
        for i, k in enumerate(spec.ys):
            ys[i].append(outs[k])
    return _result(spec, carries, [_stack(table, y, spec.axis) for y in ys])


def _length(spec: ScanBody, xs: list[Any]) -> int:
    if not xs:
        raise CompileError(f"scan of {spec.body.path} has no per-step input to take the "
                           "length from")
    return int(xs[0].shape[spec.axis])


def _take(table: dict[str, Callable[..., Any]], x: Any, axis: int, t: int) -> Any:
    ax = axis if axis >= 0 else x.ndim + axis
    return x[(slice(None),) * ax + (t,)]


def _stack(table: dict[str, Callable[..., Any]], items: list[Any], axis: int) -> Any:
    if not items:
        raise CompileError("scan over a sequence of length 0 has no outputs to stack")
    ax = axis if axis >= 0 else items[0].ndim + 1 + axis
    return table["concat"](*(table["unsqueeze"](y, ax) for y in items), ax)


def numpy_fwd(table: dict[str, Callable[..., Any]], key: int, *args: Any
              ) -> tuple[Any, Any]:
    """NumPy's training loop: the outputs and every step's cache (for :func:`numpy_vjp`)."""
    spec = BODIES[key]
    _, forward_train, _ = spec.functions(table, True)
    assert forward_train is not None
    carries, xs, params = _split(spec, args)
    n_t = _length(spec, xs)
    ys: list[list[Any]] = [[] for _ in spec.ys]
    caches = []
    for t in range(n_t):
        values = dict(params)
        values.update(zip((c for c, _ in spec.carry), carries, strict=True))
        values.update((k, _take(table, x, spec.axis, t)) for k, x in zip(spec.xs, xs,
                                                                         strict=True))
        outs, cache = forward_train(values)
        caches.append((values, cache))
        carries = [outs[c] for _, c in spec.carry]
        for i, k in enumerate(spec.ys):
            ys[i].append(outs[k])
    out = _result(spec, carries, [np.stack(y, axis=spec.axis) for y in ys])
    return out, caches


def numpy_vjp(table: dict[str, Callable[..., Any]], grad: Any, output: Any, key: int,
              *args: Any, cache: Any = None) -> tuple[Any, ...]:
    """Gradients of every input of the loop: the body's generated backward run step by step
    in reverse, the carry's gradient handed back one step, the parameters' summed."""
    spec = BODIES[key]
    if cache is None:
        output, cache = numpy_fwd(table, key, *args)
    _, _, backward = spec.functions(table, True)
    assert backward is not None
    _, xs, params = _split(spec, args)
    n_c = len(spec.carry)
    outs = output if isinstance(output, tuple) else (output,)
    grads = grad if isinstance(grad, tuple) else (grad,)
    g_carry = [np.zeros_like(o) if g is None else g for o, g in zip(outs[:n_c], grads[:n_c],
                                                                      strict=True)]
    g_ys = list(grads[n_c:])
    g_params = {k: np.zeros_like(v) for k, v in params.items()}
    g_xs = [np.zeros_like(x) for x in xs]
    for t in range(len(cache) - 1, -1, -1):
        values, step_cache = cache[t]
        out_grads = {c_out: g for (_, c_out), g in zip(spec.carry, g_carry, strict=True)}
        for k, g in zip(spec.ys, g_ys, strict=True):
            if g is not None:  # a per-step output that is also a carry gets both
                g_t = _take(table, g, spec.axis, t)
                out_grads[k] = out_grads[k] + g_t if k in out_grads else g_t
        step = backward(step_cache, out_grads, values)
        g_carry = [step[c_in] for c_in, _ in spec.carry]
        for k in spec.params:
            g_params[k] = g_params[k] + step[k]
        for i, k in enumerate(spec.xs):
            ax = spec.axis if spec.axis >= 0 else xs[i].ndim + spec.axis
            g_xs[i][(slice(None),) * ax + (t,)] = step[k]
    return (None, *g_carry, *g_xs, *(g_params[k] for k in spec.params))


def jax_scan(table: dict[str, Callable[..., Any]], key: int, *args: Any) -> Any:
    """JAX's loop: ``jax.lax.scan`` over the body (traced once whatever the length)."""
    import jax
    import jax.numpy as jnp

    spec = BODIES[key]
    forward, _, _ = spec.functions(table, False)
    carries, xs, params = _split(spec, args)
    axis = spec.axis
    xs_lead = [jnp.moveaxis(x, axis, 0) for x in xs]

    def step(carry: tuple[Any, ...], x_t: tuple[Any, ...]) -> tuple[tuple[Any, ...],
                                                                    tuple[Any, ...]]:
        values = dict(params)
        values.update(zip((c for c, _ in spec.carry), carry, strict=True))
        values.update(zip(spec.xs, x_t, strict=True))
        outs = forward(values)
        return tuple(outs[c] for _, c in spec.carry), tuple(outs[k] for k in spec.ys)

    final, ys = jax.lax.scan(step, tuple(carries), tuple(xs_lead))
    ys_out = [jnp.moveaxis(y, 0, axis if axis >= 0 else y.ndim + axis) for y in ys]
    return _result(spec, list(final), ys_out)


def register_scan(registry: Any, kind: str) -> None:
    """Register the ``scan`` kernel (and NumPy's ``scan_fwd`` / ``scan_vjp``) of a backend.

    ``kind`` is ``"jax"``, ``"numpy"`` or ``"python"`` (a Python loop: PyTorch, MLX).
    """
    def table() -> dict[str, Callable[..., Any]]:
        return registry.table(kind == "numpy")

    loop = jax_scan if kind == "jax" else python_loop

    def scan(key: int, *args: Any) -> Any:
        return loop(table(), key, *args)

    scan.__doc__ = f"The generic loop ({loop.__name__}; mithril/framework/scan.py)."
    registry.kernel("scan")(scan)
    if kind == "numpy":
        def scan_fwd(key: int, *args: Any) -> tuple[Any, Any]:
            return numpy_fwd(table(), key, *args)

        def scan_vjp(grad: Any, output: Any, key: int, *args: Any, cache: Any = None
                     ) -> tuple[Any, ...]:
            return numpy_vjp(table(), grad, output, key, *args, cache=cache)

        registry.kernel("scan", mode="with_cache")(scan_fwd)
        registry.kernel("scan_vjp")(scan_vjp)


__all__ = ["BODIES", "ScanBody", "make_opdef", "new_key", "register_scan"]
