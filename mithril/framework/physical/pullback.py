"""Forward-pass reuse for the guide's training loop (``evaluate`` twice per step).

The guide trains with two calls per step: ``outputs = evaluate(params, inputs)`` for the
logits, then ``evaluate(params, inputs, output_gradients)`` for the gradients. The second call
asks for the gradients *of the forward pass already done*; running the forward pass again
would cost time and, for a model with state (BatchNorm running statistics), update the state a
second time. So a training-mode forward call keeps a :class:`Record` of what it did, and a
gradient call that :meth:`Record.matches` it pulls the gradients back through that forward
pass instead (and leaves the state as the forward call left it).

How each backend keeps the forward pass:

- NumPy: the generated ``forward_train`` returns exactly the cache ``backward`` reads.
- PyTorch: the forward runs under autograd on detached leaf aliases of the parameters; the
  graph is kept and ``torch.autograd.grad`` runs on it once.
- JAX: one ``jax.jit`` of ``jax.vjp`` returns the outputs and the pullback (a pytree of
  residuals: the costly values only, see :class:`JaxRecorder`); a second ``jax.jit`` applies
  the pullback to the output gradients.
- MLX (no pullback object): the gradient call recomputes inside the compiled ``mx.vjp``, from
  the state and random key the forward call used, so the state is still updated once.

When reuse is exact (``Record.matches``): the same parameter and input *arrays* (``is``,
per key; the dicts may be new), unchanged since (PyTorch: the tensors' ``_version``
counters; NumPy and MLX: a copy taken at the forward call compared by value; JAX arrays are
immutable), the state the forward call left (own state: ``compiled.state`` not reassigned;
``state=``: the same dict object), and the same ``rng`` argument (``None`` both times reuses
the random draws of the forward call). Anything else, including different arrays with equal
values, runs the full forward and backward pass again. A record is used at most once, and
never kept while tracing inside the user's own ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


class Record:
    """What one training-mode forward ``evaluate`` did, for the gradient call after it."""

    __slots__ = ("data", "fingerprint", "new_state", "outputs", "own", "params", "rng_given",
                 "rng_used", "state_in", "token")

    def __init__(self, params: Mapping[str, Any], data: Mapping[str, Any], state_in: Any,
                 own: bool, rng_given: Any, rng_used: Any, outputs: Any, new_state: Any,
                 token: Any, fingerprint: Any) -> None:
        self.params = tuple(params.items())
        self.data = tuple(data.items())
        self.state_in = state_in
        self.own = own
        self.rng_given = rng_given
        self.rng_used = rng_used
        self.outputs = outputs
        self.new_state = new_state
        self.token = token
        self.fingerprint = fingerprint

    def matches(self, params: Mapping[str, Any], data: Mapping[str, Any], state: Any,
                own: bool, rng_given: Any, current_state: Any,
                unchanged: Callable[[Record], bool]) -> bool:
        """Is a gradient call with these arguments the gradient of this forward pass?"""
        if own is not self.own or rng_given is not self.rng_given:
            return False
        if own:
            if current_state is not self.new_state:
                return False
        elif state is not self.state_in:
            return False
        if len(params) != len(self.params) or len(data) != len(self.data):
            return False
        for key, value in self.params:
            if params.get(key) is not value:
                return False
        for key, value in self.data:
            if data.get(key) is not value:
                return False
        return unchanged(self)


# ---- fingerprints of in-place edits ------------------------------------------------------------
def _no_fingerprint(values: list[Any]) -> None:
    return None


def _always_unchanged(values: list[Any], fingerprint: Any) -> bool:
    return True


def _torch_versions(values: list[Any]) -> tuple[int, ...]:
    return tuple(getattr(v, "_version", 0) for v in values)


def _torch_unchanged(values: list[Any], fingerprint: Any) -> bool:
    return _torch_versions(values) == fingerprint


def _numpy_copies(values: list[Any]) -> list[Any]:
    return [np.array(v, copy=True) if isinstance(v, np.ndarray) else v for v in values]


def _numpy_unchanged(values: list[Any], fingerprint: Any) -> bool:
    for v, old in zip(values, fingerprint, strict=True):
        if isinstance(v, np.ndarray) and not np.array_equal(v, old):
            return False
    return True


def _mlx_copies(values: list[Any]) -> list[Any]:
    import mlx.core as mx

    # an MLX array is immutable underneath: ``mx.array(a)`` keeps the current value even if
    # ``a[i] = v`` later points ``a`` at new data
    return [mx.array(v) if isinstance(v, mx.array) else v for v in values]


def _mlx_unchanged(values: list[Any], fingerprint: Any) -> bool:
    import mlx.core as mx

    for v, old in zip(values, fingerprint, strict=True):
        if isinstance(v, mx.array) and not bool(mx.array_equal(v, old).item()):
            return False
    return True


# ---- per-backend recorders ---------------------------------------------------------------------
class Recorder:
    """Runs a training-mode forward pass so that its gradients can be pulled back later.

    ``forward(params, data, state, rng) -> (outputs, new_state, token)``;
    ``pull(record, params, data, output_gradients) -> gradients`` (every key of ``params``).
    This base class keeps no pullback: ``pull`` recomputes with the forward call's state and
    random key (MLX, parallel models).
    """

    fingerprint: Callable[[list[Any]], Any] = staticmethod(_no_fingerprint)
    _unchanged: Callable[[list[Any], Any], bool] = staticmethod(_always_unchanged)

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def forward(self, params: Any, data: Any, state: Any, rng: Any) -> tuple[Any, Any, Any]:
        outputs, new_state = self.compiled._forward(params, data, state, rng)
        return outputs, new_state, None

    def pull(self, record: Record, params: Any, data: Any, grads_in: Any) -> Any:
        _, _, grads = self.compiled._grad_fn(params, data, record.state_in, record.rng_used,
                                             grads_in)
        return grads

    def unchanged(self, record: Record) -> bool:
        """No array of the record was edited in place since the forward call."""
        values = [v for _, v in record.params] + [v for _, v in record.data]
        return self._unchanged(values, record.fingerprint)

    def traced(self, outputs: Mapping[str, Any]) -> bool:
        """Are these outputs traced values (inside the user's own ``jax.jit``)?"""
        return False

    def take_fingerprint(self, params: Mapping[str, Any], data: Mapping[str, Any]) -> Any:
        if self.fingerprint is _no_fingerprint:
            return None
        return self.fingerprint([*params.values(), *data.values()])


class NumpyRecorder(Recorder):
    """NumPy: ``forward_train`` keeps the cache the generated ``backward`` reads."""

    fingerprint = staticmethod(_numpy_copies)
    _unchanged = staticmethod(_numpy_unchanged)

    def forward(self, params: Any, data: Any, state: Any, rng: Any) -> tuple[Any, Any, Any]:
        return self.compiled._forward_train(params, data, state, rng)

    def pull(self, record: Record, params: Any, data: Any, grads_in: Any) -> Any:
        c = self.compiled
        keys = tuple(k for k in c.output_keys if k in grads_in)
        return c._backward_for(keys)(record.token, grads_in, params)


class TorchRecorder(Recorder):
    """PyTorch: the forward pass's autograd graph, differentiated once by ``pull``."""

    fingerprint = staticmethod(_torch_versions)
    _unchanged = staticmethod(_torch_unchanged)

    def forward(self, params: Any, data: Any, state: Any, rng: Any) -> tuple[Any, Any, Any]:
        import torch

        if torch.is_grad_enabled() and any(getattr(v, "requires_grad", False)
                                           for v in params.values()):
            # the caller differentiates the outputs with their own autograd: no aliases
            outputs, new_state = self.compiled._forward(params, data, state, rng)
            return outputs, new_state, None
        leaves = dict(params)
        names = []
        for name, value in params.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                leaves[name] = value.detach().requires_grad_(True)
                names.append(name)
        with torch.enable_grad():
            outputs, new_state = self.compiled._forward(leaves, data, state, rng)
        token = (outputs, [leaves[n] for n in names], names)
        return _torch_detached(outputs), _torch_detached(new_state), token

    def pull(self, record: Record, params: Any, data: Any, grads_in: Any) -> Any:
        from ...backends.torch.backend import autograd_backward, zeros_like_tensor

        if record.token is None:
            return super().pull(record, params, data, grads_in)
        outputs, leaves, names = record.token
        record.token = None  # the graph is freed by the backward pass
        found = autograd_backward(outputs, grads_in, leaves)
        gradients = dict(zip(names, found, strict=True))
        for name, value in params.items():
            if gradients.get(name) is None:
                gradients[name] = zeros_like_tensor(value)
        return gradients


def _torch_detached(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach() if hasattr(v, "detach") else v for k, v in values.items()}


#: element-wise and layout primitives that the JAX pullback recomputes instead of keeping
_CHEAP = frozenset((
    "abs", "add", "and", "broadcast_in_dim", "clamp", "convert_element_type", "copy", "copy_p",
    "div", "eq", "expand_dims", "ge", "gt", "integer_pow", "le", "lt", "max", "min", "mul",
    "ne", "neg", "not", "or", "reshape", "select_n", "sign", "square", "squeeze",
    "stop_gradient", "sub", "transpose"))


def _save_costly(primitive: Any, *avals: Any, **params: Any) -> bool:
    """``jax.checkpoint`` policy of the JAX pullback: keep the results of every primitive but
    the cheap element-wise and layout ones (``_CHEAP``), which the gradient call recomputes
    from the kept ones inside its jitted function (fused with the backward pass)."""
    return primitive.name not in _CHEAP


class JaxRecorder(Recorder):
    """JAX: a jitted ``jax.vjp`` returns the pullback; a jitted application runs it.

    The forward pass is ``jax.checkpoint``-ed with :func:`_save_costly`: the pullback keeps the
    results of convolutions, matrix products, reductions and transcendental functions and
    recomputes the element-wise arithmetic between them (BatchNorm's normalisation, ReLU,
    bias additions) in the gradient call, where XLA fuses it into the backward pass. That
    writes and reads far fewer arrays than keeping every intermediate (the ConvNet of the
    guide: 4 MB of residuals instead of 20 MB per step) and gives the same values.
    """

    #: recompute the cheap values in the gradient call (False: keep every intermediate)
    remat = True

    def __init__(self, compiled: Any) -> None:
        import jax
        import jax.numpy as jnp

        super().__init__(compiled)
        raw = compiled._raw_forward

        def is_float(v: Any) -> bool:
            dt = getattr(v, "dtype", None)
            return dt is not None and jnp.issubdtype(dt, jnp.inexact)

        def forward(params: dict[str, Any], data: dict[str, Any], state: dict[str, Any],
                    rng: Any) -> tuple[Any, Any, Any]:
            diff = {k: v for k, v in params.items() if is_float(v)}
            fixed = {k: v for k, v in params.items() if k not in diff}

            def pulled(p: dict[str, Any]) -> tuple[dict[str, Any], Any]:
                outputs, new_state = raw({**fixed, **p}, data, state, rng)
                chosen = {k: v for k, v in outputs.items() if is_float(v)}
                return chosen, (outputs, new_state)

            if self.remat and any(isinstance(v, jax.core.Tracer) for v in diff.values()):
                # being jitted: keep the costly values, recompute the cheap ones (_save_costly);
                # not when run eagerly (jit=False, a model jax.jit cannot trace), where
                # jax.checkpoint would trace the forward pass all the same
                pulled = jax.checkpoint(pulled, policy=_save_costly, prevent_cse=False)
            chosen, pullback, (outputs, new_state) = jax.vjp(pulled, diff, has_aux=True)
            return outputs, new_state, (pullback, chosen)

        forward.__wrapped__ = raw  # shares wrap_jit's fallback

        def apply(token: Any, grads_in: dict[str, Any], params: dict[str, Any]
                  ) -> dict[str, Any]:
            pullback, chosen = token
            cotangents = {}
            for k, v in chosen.items():
                g = grads_in.get(k)
                cotangents[k] = (jnp.zeros_like(v) if g is None else
                                 jnp.broadcast_to(jnp.asarray(g, v.dtype), v.shape))
            (grads,) = pullback(cotangents)
            return {k: grads[k] if k in grads else jnp.zeros_like(v) for k, v in params.items()}

        backend = compiled.backend
        unsettled = (compiled._forward, compiled._grad_fn)

        def settle(chosen: Any) -> None:
            # evaluate calls the chosen function directly from now on; the model's own forward
            # and gradient functions take the same decision where they have not made it yet
            # (jax.jit, or plain functions for a model jax.jit cannot trace)
            # (float64: chosen runs inside jax.enable_x64, and so do the functions set here)
            self.forward = chosen
            traced = getattr(chosen, "x64_scoped", chosen) is not forward
            if compiled._forward is unsettled[0]:
                compiled._forward = scoped(jax.jit(raw) if traced else raw)
            if unsettled[1] is not None and compiled._grad_fn is unsettled[1]:
                vjp = backend.vjp_fn(raw)
                compiled._grad_fn = scoped(jax.jit(vjp)) if traced else vjp

        scoped = backend.scoped
        if compiled.jit:
            self.forward = backend.wrap_jit(forward, settle)
            self._apply = scoped(jax.jit(apply))
        else:
            self.forward = scoped(forward)
            self._apply = scoped(apply)
        self._tracer = jax.core.Tracer

    def forward(self, params: Any, data: Any, state: Any, rng: Any) -> tuple[Any, Any, Any]:
        return self._forward(params, data, state, rng)

    def pull(self, record: Record, params: Any, data: Any, grads_in: Any) -> Any:
        for k in grads_in:
            if k not in record.outputs:
                from ...errors import InputError

                raise InputError(f"output_gradients names unknown outputs {[k]}; the outputs "
                                 f"are {sorted(record.outputs)}")
        return self._apply(record.token, dict(grads_in), dict(params))

    def traced(self, outputs: Mapping[str, Any]) -> bool:
        return any(isinstance(v, self._tracer) for v in outputs.values())


class MlxRecorder(Recorder):
    """MLX: recompute in the compiled ``mx.vjp``, from the forward call's state and key."""

    fingerprint = staticmethod(_mlx_copies)
    _unchanged = staticmethod(_mlx_unchanged)


def recorder_for(compiled: Any) -> Recorder:
    """The recorder for ``compiled``'s backend (parallel models recompute)."""
    name = compiled.backend.name
    if getattr(compiled, "parallel", None) is not None:
        return Recorder(compiled)
    if compiled._writer is not None:
        return NumpyRecorder(compiled)
    if name == "torch":
        return TorchRecorder(compiled)
    if name == "jax":
        return JaxRecorder(compiled)
    if name == "mlx":
        return MlxRecorder(compiled)
    return Recorder(compiled)
