"""Loss helpers every backend offers (``backend.cross_entropy(logits, targets)`` and friends).

They are written once on top of the backend's kernels, so they behave identically everywhere:
mean reduction, class-index or one-hot (probability) targets, and numerically stable forms
(log-softmax, log-sigmoid) so large logits give finite values.
"""

from __future__ import annotations

import functools
import math
from typing import Any

#: PyTorch's ``BCELoss`` gradient clamps ``p (1 - p)`` at this (its ``EPSILON``, the float32
#: ``1e-12f``, also used in float64)
BCE_EPSILON = 9.999999960041972e-13


class LossMixin:
    """Mixed into :class:`~mithril.backends.backend.Backend`; uses the backend's kernel table."""

    kernels: Any

    def _compiled_loss(self, name: str, predictions: Any, targets: Any) -> Any:
        """``LossMixin._<name>(self, predictions, targets)``, compiled once per helper on
        backends whose JIT is cheap to call (JAX: ``jax.jit``, MLX: ``mx.compile``; both
        recompile for new shapes); run directly on NumPy and PyTorch."""
        cache = self.__dict__.setdefault("_loss_fns", {})
        fn = cache.get(name)
        if fn is None:
            fn = functools.partial(getattr(LossMixin, "_" + name), self)
            if getattr(self, "name", None) in ("jax", "mlx"):
                fn = self.wrap_jit(fn)
            cache[name] = fn
        return fn(predictions, targets)

    @property
    def _kernel_namespace(self) -> Any:
        """The backend's kernel table as attributes (derived primitives composed)."""
        ns = self.__dict__.get("_kernels_ns")
        if ns is None:
            from ..framework.ops.decompose import KernelNamespace

            ns = self.__dict__["_kernels_ns"] = KernelNamespace(
                self.kernel_table())
        return ns

    def _one_hot(self, targets: Any, classes: int, like: Any) -> Any:
        k = self._kernel_namespace
        ids = self.arange(classes)
        hot = k.equal(k.unsqueeze(targets, -1), ids)
        return k.cast(hot, self.dtype)

    def _target_probs(self, logits: Any, targets: Any) -> Any:
        if len(targets.shape) == len(logits.shape) - 1:  # class indices
            return self._one_hot(targets, logits.shape[-1], logits)
        return targets

    def cross_entropy(self, logits: Any, targets: Any) -> Any:
        """Mean cross-entropy of ``logits`` (N, C) against class indices (N,) or
        probabilities (N, C) — ``nn.CrossEntropyLoss()``.

        >>> import mithril as ml
        >>> b = ml.NumpyBackend(dtype=ml.float64)
        >>> round(float(b.cross_entropy(b.array([[0.0, 0.0]]), b.array([1]))), 4)
        0.6931
        """
        return self._compiled_loss("cross_entropy", logits, targets)

    def _cross_entropy(self, logits: Any, targets: Any) -> Any:
        k = self._kernel_namespace
        logp = k.log_softmax(logits, -1)
        probs = self._target_probs(logits, targets)
        n = _rows(logits)
        return k.divide(k.negate(k.sum(k.multiply(probs, logp), None, False)), n)

    def cross_entropy_grad(self, logits: Any, targets: Any) -> Any:
        """Gradient of :meth:`cross_entropy` with respect to ``logits``."""
        return self._compiled_loss("cross_entropy_grad", logits, targets)

    def _cross_entropy_grad(self, logits: Any, targets: Any) -> Any:
        k = self._kernel_namespace
        probs = self._target_probs(logits, targets)
        total = k.sum(probs, -1, True)  # 1 for index / normalised targets
        return k.divide(k.subtract(k.multiply(k.softmax(logits, -1), total), probs),
                        _rows(logits))

    def mse(self, predictions: Any, targets: Any) -> Any:
        """Mean squared error (``nn.MSELoss()``)."""
        return self._compiled_loss("mse", predictions, targets)

    def _mse(self, predictions: Any, targets: Any) -> Any:
        k = self._kernel_namespace
        d = k.subtract(predictions, targets)
        return k.mean(k.multiply(d, d), None, False)

    def mse_grad(self, predictions: Any, targets: Any) -> Any:
        """Gradient of :meth:`mse` with respect to ``predictions``."""
        return self._compiled_loss("mse_grad", predictions, targets)

    def _mse_grad(self, predictions: Any, targets: Any) -> Any:
        k = self._kernel_namespace
        return k.divide(k.multiply(k.subtract(predictions, targets), 2.0), _size(predictions))

    def binary_cross_entropy(self, probabilities: Any, targets: Any) -> Any:
        """Mean binary cross-entropy of probabilities (``nn.BCELoss()``; logs clamped at -100
        as PyTorch does, so p = 0 or 1 stays finite)."""
        return self._compiled_loss("binary_cross_entropy", probabilities, targets)

    def _binary_cross_entropy(self, probabilities: Any, targets: Any) -> Any:
        k = self._kernel_namespace
        logp = k.clamp(k.log(probabilities), -100.0, None)
        log1mp = k.clamp(self._log1m(probabilities), -100.0, None)
        terms = k.add(k.multiply(targets, logp), k.multiply(k.subtract(1.0, targets), log1mp))
        return k.negate(k.mean(terms, None, False))

    def _log1m(self, p: Any) -> Any:
        """``log(1 - p)`` accurate for small ``p`` (PyTorch's ``log1p(-p)``): ``log(u) * (-p)
        / (u - 1)`` with ``u = 1 - p`` rounded, and ``-p`` where ``u == 1``."""
        k = self._kernel_namespace
        u = k.subtract(1.0, p)
        one = k.equal(u, 1.0)
        ratio = k.divide(k.negate(p), k.where(one, 1.0, k.subtract(u, 1.0)))
        return k.where(one, k.negate(p), k.multiply(k.log(u), ratio))

    def binary_cross_entropy_grad(self, probabilities: Any, targets: Any) -> Any:
        """Gradient of :meth:`binary_cross_entropy` with respect to the probabilities:
        PyTorch's ``(p - t) / max(p (1 - p), 1e-12) / n``, finite at p = 0 and 1 (clamping p
        itself to ``1 - 1e-12`` would not: that rounds to 1 in float32)."""
        return self._compiled_loss("binary_cross_entropy_grad", probabilities, targets)

    def _binary_cross_entropy_grad(self, probabilities: Any, targets: Any) -> Any:
        k = self._kernel_namespace
        p = probabilities
        denominator = k.clamp(k.multiply(p, k.subtract(1.0, p)), BCE_EPSILON, None)
        g = k.divide(k.subtract(p, targets), denominator)
        return k.divide(g, _size(probabilities))

    def binary_cross_entropy_with_logits(self, logits: Any, targets: Any) -> Any:
        """Stable mean binary cross-entropy on logits (``nn.BCEWithLogitsLoss()``)."""
        return self._compiled_loss("binary_cross_entropy_with_logits", logits, targets)

    def _binary_cross_entropy_with_logits(self, logits: Any, targets: Any) -> Any:
        k = self._kernel_namespace
        # max(x, 0) - x * t + log(1 + exp(-|x|))
        terms = k.add(k.subtract(k.relu(logits), k.multiply(logits, targets)),
                      k.softplus(k.negate(k.absolute(logits))))
        return k.mean(terms, None, False)

    def binary_cross_entropy_with_logits_grad(self, logits: Any, targets: Any) -> Any:
        """Gradient of :meth:`binary_cross_entropy_with_logits` w.r.t. the logits."""
        return self._compiled_loss("binary_cross_entropy_with_logits_grad", logits, targets)

    def _binary_cross_entropy_with_logits_grad(self, logits: Any, targets: Any) -> Any:
        k = self._kernel_namespace
        return k.divide(k.subtract(k.sigmoid(logits), targets), _size(logits))


def _rows(x: Any) -> int:
    return max(math.prod(int(d) for d in list(x.shape)[:-1]), 1)


def _size(x: Any) -> int:
    return max(math.prod(int(d) for d in list(x.shape)), 1)
