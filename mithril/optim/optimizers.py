"""Functional optimizers with PyTorch's update rules, for NumPy, PyTorch, JAX and MLX arrays.

Every optimizer has two pure methods:

- ``init(params) -> state``: the optimizer state for a dict of parameters;
- ``update(params, gradients, state) -> (new_params, new_state)``: one update step.

Neither modifies its inputs: the results are new dicts of new arrays (PyTorch tensors the
caller still holds are not touched). The state is a plain dict: ``"step"`` (a 0-d int32
array counting the updates done so far) and one ``{parameter name: array}`` dict per
per-parameter buffer (``"exp_avg"``, ``"momentum_buffer"``, ...), so with JAX arrays
``jax.jit(optimizer.update)`` works and compiles once.

``learning_rate`` (alias ``lr``) is a number or a schedule (see
:mod:`mithril.optim.schedules`), called with the number of updates done so far.
``max_grad_norm`` clips the gradients by their global norm before the update, like calling
``torch.nn.utils.clip_grad_norm_`` before ``optimizer.step()``.

>>> import numpy as np
>>> from mithril.optim import Adam
>>> optimizer = Adam(learning_rate=0.1)
>>> params = {"w": np.array([1.0, -2.0])}
>>> state = optimizer.init(params)
>>> params, state = optimizer.update(params, {"w": np.array([0.5, -0.5])}, state)
>>> params["w"].round(4).tolist(), int(state["step"])
([0.9, -1.9], 1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import ArgumentError, ArgumentTypeError, InputError
from . import array_ops as ops
from . import foreach
from .clipping import clip_by_global_norm
from .compiled import compiled_update
from .schedules import Schedule

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop"]

Array = Any
LearningRate = float | Schedule


# ---- argument checks -----------------------------------------------------------------------
def _resolve_learning_rate(learning_rate: LearningRate, lr: LearningRate | None,
                           default: float) -> LearningRate:
    """The learning rate given as ``learning_rate=`` or as its alias ``lr=`` (not both)."""
    if lr is None:
        return learning_rate
    if learning_rate != default:
        raise ArgumentTypeError(
            "give the learning rate either as learning_rate= or as lr=, not both")
    return lr


def _resolve_betas(beta1: float, beta2: float, betas: tuple[float, float] | None
                   ) -> tuple[float, float]:
    """``(beta1, beta2)``, given separately or as PyTorch's ``betas=(beta1, beta2)``."""
    if betas is None:
        return beta1, beta2
    if (beta1, beta2) != (0.9, 0.999):
        raise ArgumentTypeError("give beta1= and beta2=, or betas=(beta1, beta2), not both")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ArgumentTypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return float(betas[0]), float(betas[1])


def _check_at_least(name: str, value: float, minimum: float = 0.0) -> None:
    """Raise ``ValueError`` unless ``value >= minimum`` (the messages follow ``torch.optim``)."""
    if not value >= minimum:
        raise ArgumentError(f"Invalid {name} value: {value!r} (must be >= {minimum})")


def _check_beta(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``0 <= value < 1``."""
    if not 0.0 <= value < 1.0:
        raise ArgumentError(f"Invalid {name} value: {value!r} (must be in [0, 1))")


# ---- base class -----------------------------------------------------------------------------
class Optimizer:
    """Base of the functional optimizers: ``init`` / ``update`` around a per-array rule.

    Subclasses define ``_slot_names()`` (the per-parameter buffers kept in the state) and
    ``_update_leaf()`` (the update of one parameter array); ``_init_slot()`` may override
    how a buffer starts (zeros by default).

    >>> import numpy as np
    >>> from mithril.optim import SGD
    >>> optimizer = SGD(learning_rate=0.5)
    >>> new, _ = optimizer.update({"w": np.ones(2)}, {"w": np.ones(2)},
    ...                           optimizer.init({"w": np.ones(2)}))
    >>> new["w"].tolist()
    [0.5, 0.5]
    """

    def __init__(self, learning_rate: LearningRate, max_grad_norm: float | None) -> None:
        if not callable(learning_rate):
            _check_at_least("learning rate", learning_rate)
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ArgumentError(f"max_grad_norm must be None or > 0, got {max_grad_norm!r}")
        self.learning_rate = learning_rate
        self.max_grad_norm = max_grad_norm

    def __setattr__(self, name: str, value: Any) -> None:
        # a new setting (learning_rate, betas, ...) drops the compiled update of the last call
        # (mithril/optim/compiled.py): the next update compiles for, or finds, the new one
        object.__setattr__(self, name, value)
        if not name.startswith("_"):
            self.__dict__.pop("_fast", None)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in vars(self).items()
                         if not key.startswith("_"))
        return f"{type(self).__name__}({args})"

    # -- public API --
    def init(self, params: Mapping[str, Array]) -> dict[str, Any]:
        """The initial state for ``params`` (a dict of arrays of one framework).

        >>> import numpy as np
        >>> from mithril.optim import Adam
        >>> state = Adam().init({"w": np.zeros(3)})
        >>> sorted(state), int(state["step"])
        (['exp_avg', 'exp_avg_sq', 'step'], 0)
        """
        first = next(iter(params.values()), None)
        with ops.no_grad(first):
            state: dict[str, Any] = {"step": ops.zero_counter(first)}
            for slot in self._slot_names():
                state[slot] = {key: self._init_slot(slot, p) for key, p in params.items()}
        return state

    def update(self, params: Mapping[str, Array], gradients: Mapping[str, Array],
               state: Mapping[str, Any]) -> tuple[dict[str, Array], dict[str, Any]]:
        """One step: returns ``(new_params, new_state)``; the arguments are left unchanged.

        ``gradients`` needs an entry for every key of ``params`` (extra entries are ignored,
        so a subset of the parameters can be trained); ``state`` comes from ``init`` or a
        previous ``update`` for the same parameter names.

        >>> import numpy as np
        >>> from mithril.optim import SGD
        >>> optimizer = SGD(learning_rate=0.1, momentum=0.9)
        >>> params = {"w": np.array([1.0])}
        >>> state = optimizer.init(params)
        >>> for _ in range(2):
        ...     params, state = optimizer.update(params, {"w": np.array([1.0])}, state)
        >>> params["w"].round(4).tolist()
        [0.71]
        """
        # the usual call (dicts with the same keys, a state from init) passes its dicts as
        # they are: no copies, one key comparison each
        if type(gradients) is dict and gradients.keys() == params.keys():
            grads = gradients
        else:
            grads = self._select_gradients(params, gradients)
        slots = self._checked_slots(params, state)
        if type(state) is dict and len(state) == len(slots) + 1:
            tree = state
        else:
            tree = {"step": state["step"], **{slot: state[slot] for slot in slots}}
        fast = compiled_update(self, next(iter(params.values()), None))
        if fast is not None:  # JAX, MLX: one compiled call (mithril/optim/compiled.py)
            return fast(params if type(params) is dict else dict(params), grads, tree)
        return self._update_tree(params, grads, tree)

    def _update_tree(self, params: Mapping[str, Array], grads: Mapping[str, Array],
                     state: Mapping[str, Any], coefficients: Mapping[str, Array] | None = None
                     ) -> tuple[dict[str, Array], dict[str, Any]]:
        """The update of every parameter (checked arguments; traceable by ``jax.jit`` and
        ``mx.compile``); PyTorch tensors go through ``torch._foreach_*`` (foreach.py).
        ``coefficients``: :meth:`_host_coefficients` of this update as 0-d arrays, or None."""
        slots = self._slot_names()
        first = next(iter(params.values()), None)
        with ops.no_grad(first):
            if self.max_grad_norm is not None:
                grads = clip_by_global_norm(grads, self.max_grad_norm)
            if foreach.usable(params):
                new_params, new_slots = foreach.foreach_update(self, params, grads, state,
                                                               slots)
            else:
                new_params, new_slots = self._update_each(params, grads, state, slots,
                                                          coefficients)
            new_step = ops.cast(state["step"] + 1, state["step"])
        return new_params, {"step": new_step, **new_slots}

    def _update_each(self, params: Mapping[str, Array], grads: Mapping[str, Array],
                     state: Mapping[str, Any], slots: tuple[str, ...],
                     coefficients: Mapping[str, Array] | None = None
                     ) -> tuple[dict[str, Array], dict[str, dict[str, Array]]]:
        """The rule applied to one array at a time (NumPy; traced on JAX and MLX)."""
        new_params: dict[str, Array] = {}
        new_slots: dict[str, dict[str, Array]] = {slot: {} for slot in slots}
        for key, p in params.items():
            step = ops.cast(state["step"], p)
            leaf_slots = {slot: state[slot][key] for slot in slots}
            new_p, leaf_new = self._update_leaf(p, grads[key], leaf_slots, step,
                                                self._learning_rate_at(step, p), coefficients)
            new_params[key] = ops.keep_requires_grad(ops.as_array(new_p, p), p)
            for slot in slots:
                new_slots[slot][key] = ops.as_array(leaf_new[slot], p)
        return new_params, new_slots

    # -- helpers --
    def _learning_rate_at(self, step: Array, like: Array) -> Array | float:
        """The learning rate at ``step``: the number itself or the schedule's value."""
        if callable(self.learning_rate):
            return ops.cast(self.learning_rate(step), like)
        return self.learning_rate

    @staticmethod
    def _select_gradients(params: Mapping[str, Array],
                          gradients: Mapping[str, Array]) -> dict[str, Array]:
        """The gradients of ``params``' keys; ``KeyError`` naming any that are missing."""
        missing = [key for key in params if key not in gradients]
        if missing:
            raise InputError(f"no gradient for parameter(s) {missing}")
        return {key: gradients[key] for key in params}

    def _checked_slots(self, params: Mapping[str, Array],
                       state: Mapping[str, Any]) -> tuple[str, ...]:
        """The slot names, after checking that ``state`` fits this optimizer and ``params``."""
        slots = self._slot_names()
        for name in ("step", *slots):
            if name not in state:
                raise ArgumentError(f"optimizer state has no {name!r} entry; create it with "
                                    f"{type(self).__name__}.init(params)")
        for slot in slots:
            if state[slot].keys() != params.keys():
                raise ArgumentError(f"optimizer state {slot!r} is for parameters "
                                    f"{sorted(state[slot])}, got {sorted(params)}")
        return slots

    # -- to override --
    def _slot_names(self) -> tuple[str, ...]:
        """Names of the per-parameter buffers this optimizer keeps."""
        return ()

    def _init_slot(self, slot: str, p: Array) -> Array:
        """The initial value of buffer ``slot`` for parameter ``p`` (zeros)."""
        return ops.zeros_like(p)

    def _host_coefficients(self, step: int) -> dict[str, float] | None:
        """The step-dependent scalars of update number ``step + 1`` computed in Python, or None
        (the default: computed inside the update from the step counter).

        MLX's compiled update takes them as 0-d array inputs (mithril/optim/compiled.py):
        computing them from the step counter on the device costs more than the whole
        element-wise update of a small tree there. ``_update_leaf`` gets them as
        ``coefficients`` (same names, 0-d arrays of the parameter's dtype).
        """
        return None

    def _update_leaf(self, p: Array, g: Array, slots: dict[str, Array], step: Array,
                     lr: Array | float, coefficients: Mapping[str, Array] | None = None
                     ) -> tuple[Array, dict[str, Array]]:
        """New value of one parameter and its buffers.

        ``step`` is the number of updates done before this one, as a 0-d array of ``p``'s
        dtype; ``lr`` is the learning rate for this update; ``coefficients`` are
        :meth:`_host_coefficients` for this step when the caller computed them, else None.
        """
        raise NotImplementedError


# ---- SGD ------------------------------------------------------------------------------------
class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov and weight decay.

    Same update and defaults as ``torch.optim.SGD``: ``g = grad + weight_decay * p``; with
    momentum ``buf = g`` on the first update, ``buf = momentum * buf + (1 - dampening) * g``
    after; ``d = g + momentum * buf`` (Nesterov) or ``buf``; ``p = p - lr * d``.

    >>> import numpy as np
    >>> optimizer = SGD(learning_rate=0.1)
    >>> params, state = optimizer.update({"w": np.array([1.0])}, {"w": np.array([2.0])},
    ...                                  optimizer.init({"w": np.array([1.0])}))
    >>> params["w"].tolist()
    [0.8]
    """

    def __init__(self, learning_rate: LearningRate = 1e-3, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, dampening: float = 0.0,
                 *, lr: LearningRate | None = None, max_grad_norm: float | None = None) -> None:
        super().__init__(_resolve_learning_rate(learning_rate, lr, 1e-3), max_grad_norm)
        _check_at_least("momentum", momentum)
        _check_at_least("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ArgumentError("Nesterov momentum requires a momentum and zero dampening")
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self.dampening = dampening

    def _slot_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _update_leaf(self, p: Array, g: Array, slots: dict[str, Array], step: Array,
                     lr: Array | float, coefficients: Mapping[str, Array] | None = None
                     ) -> tuple[Array, dict[str, Array]]:
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        if self.momentum == 0:
            return p - lr * g, {}
        buf = self.momentum * slots["momentum_buffer"] + (1 - self.dampening) * g
        if self.dampening != 0:  # the first update takes g undamped (buffer starts at zero)
            buf = ops.where(step == 0, g, buf)
        direction = g + self.momentum * buf if self.nesterov else buf
        return p - lr * direction, {"momentum_buffer": buf}


# ---- Adam / AdamW ---------------------------------------------------------------------------
class Adam(Optimizer):
    """Adam (optionally AMSGrad) with L2 weight decay added to the gradient.

    Same update and defaults as ``torch.optim.Adam``: ``m = beta1 * m + (1 - beta1) * g``,
    ``v = beta2 * v + (1 - beta2) * g**2`` (``v_max = max(v_max, v)`` with ``amsgrad``),
    ``p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)`` for update
    number ``t`` (from 1). PyTorch's spelling ``Adam(lr=..., betas=(beta1, beta2))`` works too.

    >>> import numpy as np
    >>> optimizer = Adam(learning_rate=0.1, amsgrad=True)
    >>> params, state = optimizer.update({"w": np.array([1.0])}, {"w": np.array([2.0])},
    ...                                  optimizer.init({"w": np.array([1.0])}))
    >>> params["w"].round(6).tolist(), sorted(state)
    ([0.9], ['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq', 'step'])
    """

    _decoupled_weight_decay = False

    def __init__(self, learning_rate: LearningRate = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, *, lr: LearningRate | None = None,
                 betas: tuple[float, float] | None = None,
                 max_grad_norm: float | None = None) -> None:
        super().__init__(_resolve_learning_rate(learning_rate, lr, 1e-3), max_grad_norm)
        beta1, beta2 = _resolve_betas(beta1, beta2, betas)
        _check_beta("beta1", beta1)
        _check_beta("beta2", beta2)
        _check_at_least("eps", eps)
        _check_at_least("weight_decay", weight_decay)
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weight_decay = weight_decay
        self.amsgrad = amsgrad

    def _slot_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _update_leaf(self, p: Array, g: Array, slots: dict[str, Array], step: Array,
                     lr: Array | float, coefficients: Mapping[str, Array] | None = None
                     ) -> tuple[Array, dict[str, Array]]:
        if self.weight_decay != 0:
            if self._decoupled_weight_decay:
                p = p * (1 - lr * self.weight_decay)
            else:
                g = g + self.weight_decay * p
        m = self.beta1 * slots["exp_avg"] + (1 - self.beta1) * g
        v = self.beta2 * slots["exp_avg_sq"] + (1 - self.beta2) * (g * g)
        new = {"exp_avg": m, "exp_avg_sq": v}
        if self.amsgrad:
            v = ops.maximum(slots["max_exp_avg_sq"], v)
            new["max_exp_avg_sq"] = v
        if coefficients is None:
            t = step + 1
            bias_correction2_sqrt = ops.sqrt(1 - self.beta2 ** t)
            step_size = lr / (1 - self.beta1 ** t)
        else:
            bias_correction2_sqrt = coefficients["bias_correction2_sqrt"]
            step_size = coefficients["step_size"]
        denom = ops.sqrt(v) / bias_correction2_sqrt + self.eps
        return p - step_size * m / denom, new

    def _host_coefficients(self, step: int) -> dict[str, float] | None:
        if callable(self.learning_rate):  # a schedule: evaluated inside the update
            return None
        t = step + 1
        return {"bias_correction2_sqrt": math.sqrt(1 - self.beta2 ** t),
                "step_size": self.learning_rate / (1 - self.beta1 ** t)}


class AdamW(Adam):
    """Adam with decoupled weight decay: ``p = p * (1 - lr * weight_decay)`` before Adam's step.

    Same update and defaults as ``torch.optim.AdamW`` (also its ``amsgrad`` option).

    >>> import numpy as np
    >>> optimizer = AdamW(learning_rate=0.1, weight_decay=0.5)
    >>> params, _ = optimizer.update({"w": np.array([1.0])}, {"w": np.array([2.0])},
    ...                              optimizer.init({"w": np.array([1.0])}))
    >>> params["w"].round(6).tolist()
    [0.85]
    """

    _decoupled_weight_decay = True

    def __init__(self, learning_rate: LearningRate = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.01,
                 amsgrad: bool = False, *, lr: LearningRate | None = None,
                 betas: tuple[float, float] | None = None,
                 max_grad_norm: float | None = None) -> None:
        super().__init__(learning_rate, beta1, beta2, eps, weight_decay, amsgrad, lr=lr,
                         betas=betas, max_grad_norm=max_grad_norm)


# ---- RMSprop --------------------------------------------------------------------------------
class RMSprop(Optimizer):
    """RMSprop, optionally centered and with momentum.

    Same update and defaults as ``torch.optim.RMSprop``: ``s = alpha * s + (1 - alpha) *
    g**2``; ``avg = sqrt(s - a**2) + eps`` with the centered mean ``a = alpha * a + (1 -
    alpha) * g``, else ``sqrt(s) + eps``; ``p = p - lr * g / avg``, or with momentum
    ``buf = momentum * buf + g / avg`` and ``p = p - lr * buf``.

    >>> import numpy as np
    >>> optimizer = RMSprop(learning_rate=0.01, centered=True, momentum=0.9)
    >>> params, state = optimizer.update({"w": np.array([1.0])}, {"w": np.array([2.0])},
    ...                                  optimizer.init({"w": np.array([1.0])}))
    >>> sorted(state)
    ['grad_avg', 'momentum_buffer', 'square_avg', 'step']
    """

    def __init__(self, learning_rate: LearningRate = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, momentum: float = 0.0, centered: bool = False,
                 weight_decay: float = 0.0, *, lr: LearningRate | None = None,
                 max_grad_norm: float | None = None) -> None:
        super().__init__(_resolve_learning_rate(learning_rate, lr, 1e-2), max_grad_norm)
        _check_at_least("alpha", alpha)
        _check_at_least("eps", eps)
        _check_at_least("momentum", momentum)
        _check_at_least("weight_decay", weight_decay)
        self.alpha = alpha
        self.eps = eps
        self.momentum = momentum
        self.centered = centered
        self.weight_decay = weight_decay

    def _slot_names(self) -> tuple[str, ...]:
        return (("square_avg",) + (("momentum_buffer",) if self.momentum > 0 else ())
                + (("grad_avg",) if self.centered else ()))

    def _update_leaf(self, p: Array, g: Array, slots: dict[str, Array], step: Array,
                     lr: Array | float, coefficients: Mapping[str, Array] | None = None
                     ) -> tuple[Array, dict[str, Array]]:
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        square_avg = self.alpha * slots["square_avg"] + (1 - self.alpha) * (g * g)
        new = {"square_avg": square_avg}
        if self.centered:
            grad_avg = self.alpha * slots["grad_avg"] + (1 - self.alpha) * g
            new["grad_avg"] = grad_avg
            avg = ops.sqrt(square_avg - grad_avg * grad_avg) + self.eps
        else:
            avg = ops.sqrt(square_avg) + self.eps
        if self.momentum > 0:
            buf = self.momentum * slots["momentum_buffer"] + g / avg
            new["momentum_buffer"] = buf
            return p - lr * buf, new
        return p - lr * g / avg, new


# ---- Adagrad --------------------------------------------------------------------------------
class Adagrad(Optimizer):
    """Adagrad with learning-rate decay.

    Same update and defaults as ``torch.optim.Adagrad``: ``s = s + g**2`` (``s`` starts at
    ``initial_accumulator_value``), ``p = p - lr / (1 + k * lr_decay) * g / (sqrt(s) +
    eps)`` for update number ``k`` (from 0).

    >>> import numpy as np
    >>> optimizer = Adagrad(learning_rate=0.1)
    >>> params, state = optimizer.update({"w": np.array([1.0])}, {"w": np.array([2.0])},
    ...                                  optimizer.init({"w": np.array([1.0])}))
    >>> params["w"].round(6).tolist(), state["sum"]["w"].tolist()
    ([0.9], [4.0])
    """

    def __init__(self, learning_rate: LearningRate = 1e-2, lr_decay: float = 0.0,
                 eps: float = 1e-10, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, *, lr: LearningRate | None = None,
                 max_grad_norm: float | None = None) -> None:
        super().__init__(_resolve_learning_rate(learning_rate, lr, 1e-2), max_grad_norm)
        _check_at_least("lr_decay", lr_decay)
        _check_at_least("eps", eps)
        _check_at_least("weight_decay", weight_decay)
        _check_at_least("initial_accumulator_value", initial_accumulator_value)
        self.lr_decay = lr_decay
        self.eps = eps
        self.weight_decay = weight_decay
        self.initial_accumulator_value = initial_accumulator_value

    def _slot_names(self) -> tuple[str, ...]:
        return ("sum",)

    def _init_slot(self, slot: str, p: Array) -> Array:
        return ops.full_like(p, self.initial_accumulator_value)

    def _update_leaf(self, p: Array, g: Array, slots: dict[str, Array], step: Array,
                     lr: Array | float, coefficients: Mapping[str, Array] | None = None
                     ) -> tuple[Array, dict[str, Array]]:
        if self.weight_decay != 0:
            g = g + self.weight_decay * p
        total = slots["sum"] + g * g
        decayed_lr = lr / (1 + step * self.lr_decay)
        return p - decayed_lr * g / (ops.sqrt(total) + self.eps), {"sum": total}
