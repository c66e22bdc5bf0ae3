"""Reference-API classification metrics: Accuracy-style Precision, Recall, F1 and AUC
(split from ``reference.py``; exported from ``mithril.models``)."""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError
from ..framework.logical.model import Connection, IOKey, Model
from .reference import add_op, float_dtype_of

# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
_AVERAGES = ("micro", "macro", "binary")


class _ClassificationMetric(Model):
    """Counts shared by ``Precision``, ``Recall`` and ``F1``; subclasses combine them."""

    def __init__(self, average: str = "micro", threshold: float = 0.5, *,
                 name: str | None = None) -> None:
        super().__init__(name)
        if average not in _AVERAGES:
            raise ArgumentError(f"average must be one of {_AVERAGES}, got {average!r}")
        self.average = average
        self.threshold = threshold
        f = float_dtype_of(self)
        x = add_op(self, "buffer", input="input")
        if average == "binary":
            t = add_op(self, "buffer", input="target")
            pred = x > threshold
            truth = t > 0.5
            axis: Any = None
        else:
            t = add_op(self, "buffer", input=IOKey("target", type=int))
            classes = x.shape[-1]
            scores = x.reshape((-1, classes))
            pred = add_op(self, "one_hot", input=scores.argmax(axis=-1), num_classes=classes)
            truth = add_op(self, "one_hot", input=t.reshape((-1,)), num_classes=classes)
            axis = 0

        def count(mask: Connection) -> Connection:
            return add_op(self, "cast", input=mask, dtype=f).sum(axis=axis)

        tp, n_pred, n_true = count(pred & truth), count(pred), count(truth)
        value = self._combine(tp, n_pred, n_true)
        if average == "macro":
            value = value.mean()
        elif average == "micro":
            value = self._combine(tp.sum(), n_pred.sum(), n_true.sum())
        add_op(self, "buffer", out=IOKey("output", type=float), input=value)
        self.set_cin("input")
        self.set_cout("output")

    def _combine(self, tp: Connection, n_pred: Connection, n_true: Connection) -> Connection:
        raise NotImplementedError

    @staticmethod
    def _ratio(num: Connection, den: Connection) -> Connection:
        """``num / den``, 0 where ``den`` is 0 (``num <= den`` here, so max(den, 1) works)."""
        model = num.model
        assert isinstance(model, Model)
        return num / add_op(model, "maximum", left=den, right=1.0)


_METRIC_DOC = """

    Terminals: ``input``, ``target`` and the 0-d ``output`` (backend float dtype).

    - ``average="binary"``: ``input`` holds scores (e.g. probabilities); a sample is predicted
      positive where ``input > threshold`` (default 0.5; use 0.0 for logits). ``target`` holds
      0/1 (or bool) labels of the same shape.
    - ``average="macro"``: ``input`` is ``(..., C)`` class scores (the prediction is the
      arg-max over the last axis) and ``target`` the integer class indices; the metric is
      computed per class and averaged over all ``C`` classes (scikit-learn with
      ``labels=range(C)``).
    - ``average="micro"`` (default): the same inputs, counts pooled over classes; for
      single-label data precision, recall and F1 all equal the accuracy.

    A ratio with a zero denominator counts as 0 (scikit-learn's ``zero_division=0``).
"""


class Precision(_ClassificationMetric):
    """Precision ``TP / (TP + FP)``.

    >>> import mithril as ml
    >>> from mithril.models import Precision
    >>> bk = ml.NumpyBackend()
    >>> pm = ml.compile(Precision(average="binary"), bk, shapes={"input": [4], "target": [4]})
    >>> out = pm.evaluate({}, {"input": bk.array([0.9, 0.8, 0.2, 0.7]),
    ...                        "target": bk.array([1.0, 0.0, 1.0, 1.0])})["output"]
    >>> round(float(out), 4)
    0.6667
    """

    def _combine(self, tp: Connection, n_pred: Connection, n_true: Connection) -> Connection:
        return self._ratio(tp, n_pred)


class Recall(_ClassificationMetric):
    """Recall ``TP / (TP + FN)``.

    >>> import mithril as ml
    >>> from mithril.models import Recall
    >>> bk = ml.NumpyBackend()
    >>> pm = ml.compile(Recall(average="binary"), bk, shapes={"input": [4], "target": [4]})
    >>> out = pm.evaluate({}, {"input": bk.array([0.9, 0.8, 0.2, 0.7]),
    ...                        "target": bk.array([1.0, 0.0, 1.0, 1.0])})["output"]
    >>> round(float(out), 4)
    0.6667
    """

    def _combine(self, tp: Connection, n_pred: Connection, n_true: Connection) -> Connection:
        return self._ratio(tp, n_true)


class F1(_ClassificationMetric):
    """F1 score ``2 TP / (2 TP + FP + FN)`` (macro: the mean of the per-class F1 scores).

    >>> import mithril as ml
    >>> from mithril.models import F1
    >>> bk = ml.NumpyBackend()
    >>> pm = ml.compile(F1(average="macro"), bk, shapes={"input": [3, 2]})
    >>> out = pm.evaluate({}, {"input": bk.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]),
    ...                        "target": bk.array([0, 1, 1])})["output"]
    >>> round(float(out), 4)
    0.6667
    """

    def _combine(self, tp: Connection, n_pred: Connection, n_true: Connection) -> Connection:
        return self._ratio(tp * 2.0, n_pred + n_true)


for _cls in (Precision, Recall, F1):
    _cls.__doc__ = (_cls.__doc__ or "") + _METRIC_DOC


class AUC(Model):
    """Area under the ROC curve for binary labels, by its rank (Mann-Whitney) definition:
    the probability that a random positive sample scores higher than a random negative one,
    ties counting one half — ``roc_auc_score`` of scikit-learn.

    ``input`` holds scores and ``target`` 0/1 (or bool) labels, both flattened; the 0-d
    ``output`` is in the backend's float dtype and is NaN when only one class is present.
    Memory grows with the square of the number of samples (every pair is compared).

    >>> import mithril as ml
    >>> from mithril.models import AUC
    >>> bk = ml.NumpyBackend()
    >>> pm = ml.compile(AUC(), bk, shapes={"input": [4], "target": [4]})
    >>> float(pm.evaluate({}, {"input": bk.array([0.1, 0.4, 0.35, 0.8]),
    ...                        "target": bk.array([0.0, 0.0, 1.0, 1.0])})["output"])
    0.75
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)
        f = float_dtype_of(self)
        scores = add_op(self, "buffer", input="input").reshape((-1,))
        labels = add_op(self, "buffer", input="target").reshape((-1,))
        pos = add_op(self, "cast", input=labels > 0.5, dtype=f)
        neg = 1.0 - pos
        higher = add_op(self, "cast", input=scores[:, None] > scores[None, :], dtype=f)
        tied = add_op(self, "cast", input=scores[:, None] == scores[None, :], dtype=f)
        wins = (pos[:, None] * neg[None, :] * (higher + tied * 0.5)).sum()
        add_op(self, "divide", out=IOKey("output", type=float), left=wins,
             right=pos.sum() * neg.sum())
        self.set_cin("input")
        self.set_cout("output")


__all__ = ["Precision", "Recall", "F1", "AUC"]
