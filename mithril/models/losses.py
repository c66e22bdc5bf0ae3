"""Loss, regularisation and metric models for ``TrainModel`` (reference-API names).

Losses are elementwise (or per-sample) with terminals ``input``, ``target`` and ``output``;
``TrainModel.add_loss(..., reduce_steps=[Mean()])`` reduces them. All are built from catalogue
primitives, so they run and differentiate on every backend.
"""

from __future__ import annotations

from ..framework.logical.model import Connection, IOKey, Model, Operator
from ..framework.ops import CATALOGUE


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
    """``max(0, 1 - target * input)`` with targets in {-1, 1}."""

    def _build(self, x: Connection, t: Connection) -> None:
        self |= _op("relu")(input=1.0 - t * x, output="_hinge")
        self._finish(_c(self, "_hinge"))


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
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        self.quantile = quantile
        super().__init__(name)

    def _build(self, x: Connection, t: Connection) -> None:
        d = t - x
        self |= _op("maximum")(left=d * self.quantile, right=d * (self.quantile - 1.0),
                               output="_q")
        self._finish(_c(self, "_q"))


class KLDivergence(_Elementwise):
    """``target * (log(target) - input)`` where ``input`` holds log-probabilities and
    ``target`` probabilities (``nn.KLDivLoss(reduction="none")``); 0 where target is 0."""

    def _build(self, x: Connection, t: Connection) -> None:
        safe = _op("where")
        self |= safe(condition=t > 0.0, input1=t, input2=1.0, output="_safe_t")
        self |= _op("where")(condition=t > 0.0,
                             input1=t * (_c(self, "_safe_t").log() - x),
                             input2=0.0, output="_kl")
        self._finish(_c(self, "_kl"))


class CrossEntropy(Model):
    """Per-sample cross-entropy over the last axis (``nn.CrossEntropyLoss(reduction="none")``
    for ``(N, C)`` inputs).

    - ``input_type``: ``"logits"`` (softmax applied here, numerically stable), ``"probs"``
      (log clamped at -100 as PyTorch's ``BCELoss`` does) or ``"log_probs"``.
    - ``categorical=True``: ``target`` holds class indices (ints, shape ``(N,)``); ``False``:
      class probabilities of the input's shape.
    """

    def __init__(self, input_type: str = "logits", categorical: bool = True,
                 name: str | None = None) -> None:
        super().__init__(name)
        if input_type not in ("logits", "probs", "log_probs"):
            raise ValueError(f"input_type must be 'logits', 'probs' or 'log_probs', got "
                             f"{input_type!r}")
        self.input_type = input_type
        self.categorical = categorical
        self |= _op("buffer")(input="input", output="_x")
        x = _c(self, "_x")
        if input_type == "logits":
            self |= _op("log_softmax", axis=-1)(input=x, output="_logp")
            logp = _c(self, "_logp")
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
            self |= _op("where")(condition=_c(self, "_hot"), input1=logp,
                                 input2=0.0, output="_picked")
            picked = _c(self, "_picked")
        else:
            self |= _op("buffer")(input="target", output="_t")
            picked = _c(self, "_t") * logp
        self |= _op("negate")(input=picked.sum(axis=-1), output=IOKey("output"))
        self.set_cin("input")
        self.set_cout("output")


class BinaryCrossEntropy(_Elementwise):
    """Elementwise binary cross-entropy (``nn.BCEWithLogitsLoss`` / ``nn.BCELoss`` with
    ``reduction="none"``); ``input_type`` is ``"logits"`` (stable form) or ``"probs"``."""

    def __init__(self, input_type: str = "logits", name: str | None = None) -> None:
        if input_type not in ("logits", "probs"):
            raise ValueError(f"input_type must be 'logits' or 'probs', got {input_type!r}")
        self.input_type = input_type
        super().__init__(name)

    def _build(self, x: Connection, t: Connection) -> None:
        if self.input_type == "logits":
            # max(x, 0) - x t + log(1 + exp(-|x|))
            self |= _op("relu")(input=x, output="_pos")
            self |= _op("softplus")(input=-abs(x), output="_sp")
            self._finish(_c(self, "_pos") - x * t + _c(self, "_sp"))
            return
        self |= _op("clamp", min=-100.0)(input=x.log(), output="_logp")
        self |= _op("clamp", min=-100.0)(input=(1.0 - x).log(), output="_log1mp")
        value = -(t * _c(self, "_logp") + (1.0 - t) * _c(self, "_log1mp"))
        self._finish(value)


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
