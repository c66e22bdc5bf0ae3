"""Loss, regularisation and metric models for ``TrainModel`` (reference-API names).

Losses are elementwise (or per-sample) with terminals ``input``, ``target`` and ``output``;
``TrainModel.add_loss(..., reduce_steps=[Mean()])`` reduces them. All are built from catalogue
primitives, so they run and differentiate on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backends.losses import BCE_EPSILON
from ..errors import ArgumentError
from ..framework.logical.model import Connection, IOKey, Model, Operator
from ..framework.ops import CATALOGUE
from ..types import Constant
from . import reference_numerics as _rn
from .reference import add_op


def _op(name: str, **values: object) -> Operator:
    return Operator(CATALOGUE[name], **values)


def _c(model: Model, name: str) -> Connection:
    """A named connection of ``model`` (internal names start with ``_``)."""
    return model.named[name]


class _Elementwise(Model):
    """Base: ``input`` and ``target`` in, per-element ``output``."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self |= _op("buffer")(input="input", output="_x")
        self |= _op("buffer")(input="target", output="_t")
        self._build(_c(self, "_x"), _c(self, "_t"))
        # the reference infers target's shape from input's and the reverse
        self.set_shapes(input=[("Loss", ...)], target=[("Loss", ...)])
        self.set_cin("input")

    def _build(self, x: Connection, t: Connection) -> None:
        raise NotImplementedError

    def _finish(self, value: Connection) -> None:
        self |= _op("buffer")(input=value, output=IOKey("output"))
        self.set_cout("output")


class SquaredError(_Elementwise):
    """``(input - target) ** 2`` (``nn.MSELoss(reduction="none")``)."""

    def _build(self, x: Connection, t: Connection) -> None:
        d = x - t
        self._finish(d * d)


class AbsoluteError(_Elementwise):
    """``|input - target|`` (``nn.L1Loss(reduction="none")``)."""

    def _build(self, x: Connection, t: Connection) -> None:
        self._finish(abs(x - t))


class HingeLoss(_Elementwise):
    """``max(0, 1 - target * input)`` with targets in {-1, 1}. At the kink (``target * input
    == 1``) the gradient is the reference's half step, ``-0.5 * target`` (the middle of the
    subgradients ``0`` and ``-target``), on every backend.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import HingeLoss
    >>> b = ml.NumpyBackend(dtype=ml.float64)
    >>> pm = ml.compile(HingeLoss(), b, shapes={"input": [3]}, trainable_keys=["input"],
    ...                 constant_keys={"target": np.array([1.0, 1.0, -1.0])})
    >>> out, grads = pm.evaluate({"input": np.array([1.0, 0.5, 2.0])},
    ...                          output_gradients={"output": np.ones(3)})
    >>> out["output"].tolist(), grads["input"].tolist()
    ([0.0, 0.5, 3.0], [-0.5, -1.0, 1.0])
    """

    def _build(self, x: Connection, t: Connection) -> None:
        # max(0, z) as (z + |z|) / 2: the same values exactly (z + z and z - z are exact), and
        # the gradient (1 + sign(z)) / 2 is 1/2 at z = 0 (|z|' = sign(0) = 0 everywhere)
        z = 1.0 - t * x
        self._finish((z + abs(z)) * 0.5)


class QuadHingeLoss(_Elementwise):
    """``max(0, 1 - target * input) ** 2``."""

    def _build(self, x: Connection, t: Connection) -> None:
        self |= _op("relu")(input=1.0 - t * x, output="_hinge")
        h = _c(self, "_hinge")
        self._finish(h * h)


class QuantileLoss(_Elementwise):
    """Pinball loss ``max(q * d, (q - 1) * d)`` with ``d = target - input``."""

    def __init__(self, quantile: float = 0.5, name: str | None = None) -> None:
        if not 0 < quantile < 1:
            raise ArgumentError(f"quantile must be in (0, 1), got {quantile!r}")
        self.quantile = quantile
        super().__init__(name)

    def _build(self, x: Connection, t: Connection) -> None:
        d = t - x
        self |= _op("maximum")(left=d * self.quantile, right=d * (self.quantile - 1.0),
                               output="_q")
        self._finish(_c(self, "_q"))


class KLDivergence(_Elementwise):
    """The reference's ``KLDivergence``: ``target * (log(target) - log(input))`` with ``input``
    and ``target`` probabilities, each log the robust one (``Log(robust=True)``: linear below
    ``threshold``, default the smallest normal float of the backend's dtype), so zeros give
    finite values and gradients.

    ``input_type="log_probs"`` is PyTorch's ``nn.KLDivLoss(reduction="none")`` instead:
    ``input`` holds log-probabilities, ``target * (log(target) - input)``, 0 where target is 0.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import KLDivergence, Model
    >>> m = Model()
    >>> m |= KLDivergence()(input="p", target="q", output="kl")
    >>> pm = ml.compile(m, ml.NumpyBackend(dtype=ml.float64), shapes={"p": [2], "q": [2]})
    >>> out = pm.evaluate({}, {"p": np.array([0.5, 0.5]), "q": np.array([0.25, 0.75])})
    >>> [round(float(v), 4) for v in out["kl"]]
    [-0.1733, 0.3041]
    """

    def __init__(self, input_type: str = "probs", threshold: Any = None,
                 name: str | None = None) -> None:
        if input_type not in ("probs", "log_probs"):
            raise ArgumentError(f"KLDivergence input_type must be 'probs' or 'log_probs', got "
                                f"{input_type!r}")
        if input_type == "log_probs" and threshold is not None:
            raise ArgumentError("KLDivergence(input_type='log_probs') takes no threshold")
        self.input_type, self.threshold = input_type, threshold
        super().__init__(name)

    def _build(self, x: Connection, t: Connection) -> None:
        if self.input_type == "probs":
            c = _rn.threshold(self, self.threshold, Constant.MIN_POSITIVE_NORMAL)
            self._finish(t * (_rn.robust_log(self, t, c) - _rn.robust_log(self, x, c)))
            return
        self |= _op("where")(condition=t > 0.0, input1=t, input2=1.0, output="_safe_t")
        self |= _op("where")(condition=t > 0.0,
                             input1=t * (_c(self, "_safe_t").log() - x),
                             input2=0.0, output="_kl")
        self._finish(_c(self, "_kl"))


def _check_threshold(cls: str, robust: bool, threshold: Any) -> None:
    if threshold is not None and not robust:
        raise ArgumentError(f"{cls}(threshold={threshold!r}) needs robust=True (the cut-off "
                            "of the robust log)")


def _pos_weight(value: Any) -> Any:
    if isinstance(value, bool) or (isinstance(value, int | float) and value > 0):
        return value
    raise ArgumentError(f"pos_weight must be a positive number or True (computed from the "
                        f"targets), got {value!r}")


class CrossEntropy(Model):
    """Per-sample cross-entropy over the last axis (``nn.CrossEntropyLoss(reduction="none")``
    for ``(N, C)`` inputs), with the reference's arguments.

    - ``input_type``: ``"logits"`` (softmax applied here, numerically stable), ``"probs"``
      (log clamped at -100 as PyTorch's ``BCELoss`` does, or the robust log) or
      ``"log_probs"``.
    - ``weights``: ``False`` (none), a list of per-class weights (``nn.CrossEntropyLoss``'s
      ``weight``, not normalised: the per-sample loss is multiplied by its class' weight), or
      ``True``: balanced weights from the batch's targets, ``total / (C * count_c)`` with
      ``count_c`` the (summed) target of class ``c`` over the batch, as the reference does
      (``(N, C)`` inputs).
    - ``categorical=True``: ``target`` holds class indices (ints, shape ``(N,)``); ``False``:
      class probabilities of the input's shape.
    - ``robust=True`` (``"probs"`` only changes): the log is the reference's robust log
      (``Log(robust=True)``: linear below ``threshold``, finite at 0). With logits the log of the
      softmax normaliser (>= 1) never reaches the cut-off, so ``robust`` changes nothing there.

    >>> import numpy as np
    >>> import mithril as ml
    >>> from mithril.models import CrossEntropy, Model
    >>> m = Model()
    >>> m |= CrossEntropy(input_type="probs", weights=[1.0, 2.0])(
    ...     input="p", target="t", output="loss")
    >>> pm = ml.compile(m, ml.NumpyBackend(dtype=ml.float64), shapes={"p": [2, 2], "t": [2]})
    >>> out = pm.evaluate({}, {"p": np.array([[0.5, 0.5], [0.75, 0.25]]), "t": np.array([1, 0])})
    >>> [round(float(v), 4) for v in out["loss"]]
    [1.3863, 0.2877]
    """

    def __init__(self, input_type: str = "logits", weights: bool | Sequence[float] = False,
                 *, categorical: bool = True, robust: bool = False, threshold: Any = None,
                 name: str | None = None) -> None:
        super().__init__(name)
        if input_type not in ("logits", "probs", "log_probs"):
            raise ArgumentError(f"input_type must be 'logits', 'probs' or 'log_probs', got "
                                f"{input_type!r}")
        _check_threshold("CrossEntropy", robust, threshold)
        if not isinstance(weights, bool):
            weights = [float(w) for w in weights]
            if not weights:
                raise ArgumentError("CrossEntropy weights must be a non-empty list, True or "
                                    "False")
        self.input_type, self.categorical = input_type, categorical
        self.weights, self.robust, self.threshold = weights, robust, threshold
        self |= _op("buffer")(input="input", output="_x")
        x = _c(self, "_x")
        if input_type == "logits":
            self |= _op("log_softmax", axis=-1)(input=x, output="_logp")
            logp = _c(self, "_logp")
        elif input_type == "probs" and robust:
            logp = _rn.robust_log(self, x, _rn.threshold(self, threshold,
                                                         Constant.MIN_POSITIVE_NORMAL))
        elif input_type == "probs":
            self |= _op("clamp", min=-100.0)(input=x.log(), output="_logp")
            logp = _c(self, "_logp")
        else:
            logp = x
        if categorical:
            self |= _op("buffer")(input=IOKey("target", type=int), output="_t")
            classes = logp.shape[-1]
            self |= _op("one_hot")(input=_c(self, "_t"), num_classes=classes,
                                   output="_hot")
            hot = _c(self, "_hot")
            self |= _op("where")(condition=hot, input1=logp, input2=0.0, output="_picked")
            picked = _c(self, "_picked").sum(axis=-1)
            if weights is not False:
                one = add_op(self, "to_tensor", input=1.0)
                labels = add_op(self, "where", condition=hot, input1=one, input2=0.0)
                w = self._class_weights(labels)
                self |= _op("where")(condition=hot, input1=w, input2=0.0, output="_w_rows")
                picked = picked * _c(self, "_w_rows").sum(axis=-1)
        else:
            self |= _op("buffer")(input="target", output="_t")
            t = _c(self, "_t")
            terms = t * logp
            if weights is not False:
                terms = terms * self._class_weights(t)
            picked = terms.sum(axis=-1)
        self |= _op("negate")(input=picked, output=IOKey("output"))
        # target's shape from input's and the reverse (class indices: without the class axis)
        if categorical:
            self.set_shapes(input=[("Loss", ...), "C"], target=[("Loss", ...)])
        else:
            self.set_shapes(input=[("Loss", ...)], target=[("Loss", ...)])
        self.set_cin("input")
        self.set_cout("output")

    def _class_weights(self, labels: Connection) -> Connection:
        """The per-class weights: the given list, or balanced ones from ``labels`` (N, C)."""
        if self.weights is True:
            counts = labels.sum(axis=0)
            value = labels.sum() / (counts * labels.shape[-1])
        else:
            value = add_op(self, "to_tensor", input=list(self.weights))
        return add_op(self, "stop_gradient", input=value)


class BinaryCrossEntropy(_Elementwise):
    """Elementwise binary cross-entropy (``nn.BCEWithLogitsLoss`` / ``nn.BCELoss`` with
    ``reduction="none"``); ``input_type`` is ``"logits"`` (stable form) or ``"probs"``.
    ``pos_weight`` weighs the positive term (``nn.BCEWithLogitsLoss(pos_weight=)``; ``True``:
    ``(1 - mean(target)) / mean(target)`` of the batch, as the reference). ``robust=True`` with
    probabilities uses the reference's robust log (linear below ``threshold``) for both terms
    and its gradient; with logits it changes nothing (the logs' arguments are >= 1).

    Values and gradients are PyTorch's on every backend: with logits the gradient is exactly
    ``sigmoid(x) - t`` (also at ``x = 0``) and |x| up to 1e4 stays finite in float32; with
    probabilities the logs are clamped at -100 and the gradient is PyTorch's
    ``(p - t) / max(p (1 - p), 1e-12)``, finite at ``p = 0`` and ``p = 1``.
    """

    def __init__(self, input_type: str = "logits", pos_weight: bool | float = 1.0, *,
                 robust: bool = False, threshold: Any = None,
                 name: str | None = None) -> None:
        if input_type not in ("logits", "probs"):
            raise ArgumentError(f"input_type must be 'logits' or 'probs', got {input_type!r}")
        _check_threshold("BinaryCrossEntropy", robust, threshold)
        self.input_type, self.pos_weight = input_type, _pos_weight(pos_weight)
        self.robust, self.threshold = robust, threshold
        super().__init__(name)

    def _build(self, x: Connection, t: Connection) -> None:
        plain = self.pos_weight is not True and float(self.pos_weight) == 1.0
        if self.input_type == "logits" and plain:
            self._build_logits(x, t)
        elif self.input_type == "logits":
            self._build_weighted_logits(x, t)
        elif self.robust:
            self._build_robust_probs(x, t)
        else:
            self._build_probs(x, t)

    def _weight(self, t: Connection) -> Any:
        """``pos_weight``: the number, or (True) ``(1 - mean(t)) / mean(t)`` of the batch."""
        if self.pos_weight is True:
            mean = t.mean()
            self._stop((1.0 - mean) / mean, "_pos_weight")
            return _c(self, "_pos_weight")
        return float(self.pos_weight)

    def _build_weighted_logits(self, x: Connection, t: Connection) -> None:
        # (1 - t) x + (1 + (w - 1) t) softplus(-x), softplus(-x) written per sign of x as in
        # _build_logits; gradient ((w t + 1 - t) sigmoid(x) - w t), PyTorch's and the
        # reference's.
        w = self._weight(t)
        self |= _op("softplus")(input=-x, output="_sp_neg")
        self |= _op("softplus")(input=x, output="_sp_pos")
        self |= _op("where")(condition=x >= 0.0, input1=_c(self, "_sp_neg"),
                             input2=_c(self, "_sp_pos") - x, output="_softplus_neg")
        self._finish((1.0 - t) * x + ((w - 1.0) * t + 1.0) * _c(self, "_softplus_neg"))

    def _build_robust_probs(self, p: Connection, t: Connection) -> None:
        # the reference's robust form: -w t rlog(p) - (1 - t) rlog(1 - p), gradients through
        # the robust logs (finite at p = 0 and 1)
        c = _rn.threshold(self, self.threshold, Constant.MIN_POSITIVE_NORMAL)
        w = self._weight(t)
        self._finish(-(w * t) * _rn.robust_log(self, p, c)
                     - (1.0 - t) * _rn.robust_log(self, 1.0 - p, c))

    def _build_logits(self, x: Connection, t: Connection) -> None:
        # PyTorch's (1 - t) x - log_sigmoid(x), written for each sign of x so that softplus
        # only sees arguments <= 0 (no overflow, no cancellation, not its linear part above 20):
        #   x >= 0: x (1 - t) + softplus(-x),   x < 0: softplus(x) - x t.
        # Both branches have the derivative sigmoid(x) - t, with no relu / abs whose
        # subgradient at 0 would depend on the backend.
        self |= _op("softplus")(input=-x, output="_sp_neg")
        self |= _op("softplus")(input=x, output="_sp_pos")
        self |= _op("where")(condition=x >= 0.0, input1=x * (1.0 - t) + _c(self, "_sp_neg"),
                             input2=_c(self, "_sp_pos") - x * t, output="_bce")
        self._finish(_c(self, "_bce"))

    def _log1m(self, p: Connection) -> Connection:
        """``log(1 - p)`` accurate for small ``p`` (PyTorch's ``log1p(-p)``), as
        ``log(u) * (-p) / (u - 1)`` with ``u = 1 - p`` rounded, and ``-p`` where ``u == 1``."""
        u = 1.0 - p
        self |= _op("equal")(left=u, right=1.0, output="_u_is_one")
        self |= _op("where")(condition=_c(self, "_u_is_one"), input1=1.0, input2=u - 1.0,
                             output="_u_minus_one")
        self |= _op("where")(condition=_c(self, "_u_is_one"), input1=-p,
                             input2=u.log() * (-p / _c(self, "_u_minus_one")),
                             output="_log1m")
        return _c(self, "_log1m")

    def _stop(self, value: Connection, output: str) -> None:
        self |= _op("stop_gradient")(input=value, output=output)

    def _build_probs(self, p: Connection, t: Connection) -> None:
        # Value: -(t log p + (1 - t) log(1 - p)), each log clamped at -100 (as PyTorch); the
        # logs are cut from the gradient, as the derivative of a clamped log at p = 0 or 1 is
        # 0 * inf = NaN. The gradient w.r.t. p is PyTorch's instead,
        #   s = (p - t) / max(p (1 - p), 1e-12),
        # carried by (p - stop_gradient(p)) * s, which is exactly 0 (nan_to_num keeps s finite
        # in float16, where 1e-12 rounds to 0). The gradient w.r.t. t stays
        # log(1 - p) - log(p) with the clamped logs.
        self |= _op("clamp", min=-100.0)(input=p.log(), output="_logp")
        self |= _op("clamp", min=-100.0)(input=self._log1m(p), output="_log1mp")
        self._stop(_c(self, "_logp"), "_logp_value")
        self._stop(_c(self, "_log1mp"), "_log1mp_value")
        plain = self.pos_weight is not True and float(self.pos_weight) == 1.0
        wt = t if plain else self._weight(t) * t
        value = -(wt * _c(self, "_logp_value") + (1.0 - t) * _c(self, "_log1mp_value"))
        self |= _op("clamp", min=BCE_EPSILON)(input=p * (1.0 - p), output="_denominator")
        # d/dp of -(w t log p + (1 - t) log(1 - p)) = (p (w t + 1 - t) - w t) / (p (1 - p))
        rise = p - t if plain else p * (wt + 1.0 - t) - wt
        self |= _op("nan_to_num")(input=rise / _c(self, "_denominator"), output="_slope")
        self._stop(_c(self, "_slope"), "_slope_value")
        self._stop(p, "_p_value")
        self._finish(value + (p - _c(self, "_p_value")) * _c(self, "_slope_value"))


# ---- regularisers: ``input`` in, scalar ``output`` ----
class _Reduction(Model):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self |= _op("buffer")(input="input", output="_x")
        self |= _op("buffer")(input=self._value(_c(self, "_x")),
                              output=IOKey("output"))

    def _value(self, x: Connection) -> Connection:
        raise NotImplementedError


class L1(_Reduction):
    """``sum(|input|)``."""

    def _value(self, x: Connection) -> Connection:
        return abs(x).sum()


class L2(_Reduction):
    """``0.5 * sum(input ** 2)``: with ``coef=λ`` its gradient is PyTorch's weight decay λw."""

    def _value(self, x: Connection) -> Connection:
        return (x * x).sum() * 0.5


# ---- metrics ----
class Accuracy(Model):
    """Fraction of rows whose arg-max over the last axis equals the integer ``target``."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self |= _op("argmax", axis=-1)(input="input", output="_pred")
        self |= _op("equal")(left=_c(self, "_pred"), right=IOKey("target", type=int),
                             output="_hits")
        self |= _op("cast", dtype=_float64())(input=_c(self, "_hits"),
                                              output="_hits_f")
        self |= _op("mean")(input=_c(self, "_hits_f"), output=IOKey("output"))


def _float64() -> object:
    from ..framework.types import float64

    return float64


__all__ = ["AbsoluteError", "Accuracy", "BinaryCrossEntropy", "CrossEntropy", "HingeLoss",
           "KLDivergence", "L1", "L2", "QuadHingeLoss", "QuantileLoss", "SquaredError"]
