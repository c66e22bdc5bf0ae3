"""Reference-API estimators: affine layers, regularizers, kernels, SVMs and regressions
(split from ``reference.py``; exported from ``mithril.models``)."""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError
from ..framework.logical.meta import TBD
from ..framework.logical.model import BaseModel, IOKey, Model
from .layers import Linear
from .reference import add_op, conn_of, key_of, param_of


# ----------------------------------------------------------------------------------------------
# Layers and regularisers
# ----------------------------------------------------------------------------------------------
class ElementWiseAffine(Model):
    """``output = input * weight + bias`` with trainable ``weight`` and ``bias`` that broadcast
    against ``input`` (their shapes are free: give them with ``compile(..., shapes=...)`` or
    ``set_shapes``).

    >>> import mithril as ml
    >>> from mithril.models import ElementWiseAffine
    >>> pm = ml.compile(ElementWiseAffine(), ml.NumpyBackend(),
    ...                 shapes={"input": [4, 3], "weight": [3], "bias": [3]})
    >>> sorted(pm.input_keys)
    ['bias', 'input', 'weight']
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)
        scaled = add_op(self, "multiply", left=IOKey("input"), right=param_of("weight"))
        add_op(self, "add", out=IOKey("output"), left=scaled, right=param_of("bias"))
        self.set_initializer("weight", "ones")
        self.set_initializer("bias", "zeros")
        self.set_cin("input")
        self.set_cout("output")


def _instance(model: BaseModel | type[BaseModel]) -> BaseModel:
    return model() if isinstance(model, type) else model


class Layer(Model):
    """``activation(Linear(dimension)(input))``: a dense layer with an activation model (an
    instance such as ``Relu()``, or a class). Terminals ``input``, ``weight``, ``bias``,
    ``output``.

    >>> import mithril as ml
    >>> from mithril.models import Layer, Relu
    >>> pm = ml.compile(Layer(Relu(), 4), ml.NumpyBackend(), shapes={"input": [2, 3]})
    >>> pm.shapes["output"], pm.shapes["weight"]
    ([2, 4], [4, 3])
    """

    def __init__(self, activation: BaseModel | type[BaseModel], dimension: int | None = None,
                 *, name: str | None = None) -> None:
        super().__init__(name)
        self.dimension = dimension
        self |= Linear(dimension)(input="input", weight="weight", bias="bias")
        self += _instance(activation)(output=IOKey("output"))
        self.set_cin("input")
        self.set_cout("output")


class QuadraticFormRegularizer(Model):
    """``0.5 * input @ kernel @ input^T`` for ``input`` ``(1, N)`` (or ``(N,)``) and
    ``kernel`` ``(N, N)``, as a 0-d output (for ``TrainModel.add_regularization``).

    >>> import mithril as ml
    >>> from mithril.models import QuadraticFormRegularizer
    >>> bk = ml.NumpyBackend()
    >>> pm = ml.compile(QuadraticFormRegularizer(), bk, shapes={"input": [1, 2]})
    >>> float(pm.evaluate({}, {"input": bk.array([[1.0, 2.0]]),
    ...                        "kernel": bk.array([[2.0, 0.0], [0.0, 1.0]])})["output"])
    3.0
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)
        x = add_op(self, "buffer", input="input")
        kernel = add_op(self, "buffer", input=IOKey("kernel", shape=["N", "N"]))
        add_op(self, "multiply", out=IOKey("output"), left=((x @ kernel) * x).sum(), right=0.5)
        self.set_cin("input")
        self.set_cout("output")


# ----------------------------------------------------------------------------------------------
# Kernels and kernel machines
# ----------------------------------------------------------------------------------------------
def _hyper(name: str, value: Any) -> IOKey:
    """A kernel hyperparameter: a constant when given, else a trainable ``(1,)`` tensor."""
    if value is TBD:
        return IOKey(name, shape=[1], type=float, differentiable=True)
    return IOKey(name, value=value)


class RBFKernel(Model):
    """The Gaussian kernel matrix of the reference API:
    ``output[i, j] = l_scale ** 2 * exp(-||input1[i] - input2[j]||^2 / (2 * sigma ** 2))``
    for ``input1`` ``(N, d)`` and ``input2`` ``(M, d)`` (note the reference's naming: ``sigma``
    is the length scale and ``l_scale`` the amplitude).

    ``l_scale`` and ``sigma`` are constants when given; left as ``ml.TBD`` they are trainable
    ``(1,)`` parameters initialised to 1.

    >>> import mithril as ml
    >>> from mithril.models import RBFKernel
    >>> bk = ml.NumpyBackend()
    >>> pm = ml.compile(RBFKernel(l_scale=1.0, sigma=1.0), bk,
    ...                 shapes={"input1": [1, 1], "input2": [1, 1]})
    >>> round(float(pm.evaluate({}, {"input1": bk.array([[0.0]]),
    ...                              "input2": bk.array([[2.0]])})["output"][0, 0]), 6)
    0.135335
    """

    def __init__(self, l_scale: Any = TBD, sigma: Any = TBD, *, name: str | None = None) -> None:
        super().__init__(name)
        x1 = add_op(self, "buffer", input=IOKey("input1", shape=["N", "d"]))
        x2 = add_op(self, "buffer", input=IOKey("input2", shape=["M", "d"]))
        diff = x1[:, None, :] - x2[None, :, :]
        sq = (diff * diff).sum(axis=-1)
        amp = add_op(self, "buffer", input=_hyper("l_scale", l_scale))
        width = add_op(self, "buffer", input=_hyper("sigma", sigma))
        scaled = add_op(self, "divide", left=sq * -0.5, right=width * width)
        add_op(self, "multiply", out=IOKey("output"), left=amp * amp, right=scaled.exp())
        for key, value in (("l_scale", l_scale), ("sigma", sigma)):
            if value is TBD:
                self.set_initializer(key, "ones")
        self.set_cin("input1")
        self.set_cout("output")


class PolynomialKernel(Model):
    """``output = (input1 @ input2^T + poly_coef) ** degree`` for ``input1`` ``(N, d)`` and
    ``input2`` ``(M, d)``; ``degree`` and ``poly_coef`` are constants when given, else inputs.

    >>> import mithril as ml
    >>> from mithril.models import PolynomialKernel
    >>> bk = ml.NumpyBackend()
    >>> pm = ml.compile(PolynomialKernel(degree=2, poly_coef=1.0), bk,
    ...                 shapes={"input1": [1, 2], "input2": [1, 2]})
    >>> float(pm.evaluate({}, {"input1": bk.array([[1.0, 2.0]]),
    ...                        "input2": bk.array([[3.0, 1.0]])})["output"][0, 0])
    36.0
    """

    def __init__(self, degree: Any = TBD, poly_coef: Any = TBD, *,
                 name: str | None = None) -> None:
        super().__init__(name)
        x1 = add_op(self, "buffer", input=IOKey("input1", shape=["N", "d"]))
        x2 = add_op(self, "buffer", input=IOKey("input2", shape=["M", "d"]))
        gram = add_op(self, "add", left=x1 @ x2.T, right=key_of("poly_coef", poly_coef))
        add_op(self, "power", out=IOKey("output"), left=gram, right=key_of("degree", degree))
        self.set_cin("input1")
        self.set_cout("output")


class KernelizedSVM(Model):
    """A kernel machine: ``output = kernel(input1, input2) @ weight^T + bias``.

    ``kernel`` is a kernel model (``RBFKernel``, ``PolynomialKernel``, ...) with terminals
    ``input1``, ``input2`` and one output; its other inputs keep their names. The kernel
    matrix ``(N, M)`` is exposed as ``kernel``; ``weight`` is ``(1, M)``, ``bias`` ``(1,)`` and
    ``output`` ``(N, 1)`` (decision values; take the sign for labels).

    >>> import mithril as ml
    >>> from mithril.models import KernelizedSVM, RBFKernel
    >>> pm = ml.compile(KernelizedSVM(RBFKernel(1.0, 1.0)), ml.NumpyBackend(),
    ...                 shapes={"input1": [5, 2], "input2": [3, 2]})
    >>> pm.shapes["output"], pm.shapes["weight"]
    ([5, 1], [1, 3])
    """

    def __init__(self, kernel: BaseModel, *, name: str | None = None) -> None:
        super().__init__(name)
        inputs = kernel.input_terminals()
        outputs = kernel.output_terminals()
        if not {"input1", "input2"} <= set(inputs) or len(outputs) != 1:
            raise ArgumentError("KernelizedSVM needs a kernel model with inputs 'input1' and "
                                f"'input2' and one output; got inputs {inputs}, outputs {outputs}")
        self.kernel_model = kernel
        self |= kernel(**{k: k for k in inputs}, **{outputs[0]: IOKey("kernel", expose=True)})
        self |= Linear(1)(input="kernel", weight="weight", bias="bias", output=IOKey("output"))
        self.set_cin("input1")
        self.set_cout("output")


class LinearSVM(Model):
    """A linear SVM: ``output = input @ weight^T + bias`` (``(N, 1)`` decision values) and
    ``decision_output = sign(output)``. Train ``output`` with ``HingeLoss`` (labels ±1).

    >>> import mithril as ml
    >>> from mithril.models import LinearSVM
    >>> pm = ml.compile(LinearSVM(), ml.NumpyBackend(), shapes={"input": [4, 3]})
    >>> pm.shapes["output"], pm.shapes["decision_output"]
    ([4, 1], [4, 1])
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)
        self |= Linear(1)(input="input", weight="weight", bias="bias",
                          output=IOKey("output", expose=True))
        add_op(self, "sign", out=IOKey("decision_output"), input=conn_of(self, "output"))
        self.set_cin("input")
        self.set_cout("output")


class LogisticRegression(Model):
    """Binary logistic regression: ``output = input @ weight^T + bias`` (logits, ``(N, 1)``)
    and ``probs_output = sigmoid(output)``. Train ``output`` with
    ``BinaryCrossEntropy(input_type="logits")``.

    >>> import mithril as ml
    >>> from mithril.models import LogisticRegression
    >>> pm = ml.compile(LogisticRegression(), ml.NumpyBackend(), shapes={"input": [4, 3]})
    >>> pm.shapes["probs_output"]
    [4, 1]
    """

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name)
        self |= Linear(1)(input="input", weight="weight", bias="bias",
                          output=IOKey("output", expose=True))
        add_op(self, "sigmoid", out=IOKey("probs_output"), input=conn_of(self, "output"))
        self.set_cin("input")
        self.set_cout("output")


class PolynomialRegression(Model):
    """``Linear(dimension)`` on ``PolynomialFeatures(degree)`` of ``input`` ``(N, d)``.

    >>> import mithril as ml
    >>> from mithril.models import PolynomialRegression
    >>> pm = ml.compile(PolynomialRegression(2, 1), ml.NumpyBackend(), shapes={"input": [4, 2]})
    >>> pm.shapes["weight"]
    [1, 5]
    """

    def __init__(self, degree: int, dimension: int | None = None, *,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.degree = degree
        self.dimension = dimension
        features = add_op(self, "polynomial_features", input="input", degree=degree)
        self |= Linear(dimension)(input=features, weight="weight", bias="bias",
                                  output=IOKey("output"))
        self.set_cin("input")
        self.set_cout("output")


__all__ = ["ElementWiseAffine", "Layer", "QuadraticFormRegularizer", "RBFKernel",
           "PolynomialKernel", "KernelizedSVM", "LinearSVM", "LogisticRegression",
           "PolynomialRegression"]
