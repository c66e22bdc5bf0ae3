"""Mithril: build a model once, compile it for NumPy, PyTorch, JAX or MLX.

>>> import mithril as ml
>>> from mithril.models import Model, Linear, Relu
>>> model = Model()
>>> model |= Linear(dimension=4)(input_size=3)
>>> model += Relu()
>>> pm = ml.compile(model, ml.NumpyBackend(), shapes={"input": [2, 3]})
>>> params = pm.randomize_params()
>>> pm.evaluate(params, {"input": ml.NumpyBackend().ones(2, 3)})["output"].shape
(2, 4)
"""

from .errors import (
    ArgumentError,
    ArgumentTypeError,
    BackendUnavailableError,
    CompileError,
    InputError,
    MithrilError,
    ModelFileError,
    ModelReuseError,
    ShapeMismatchError,
    TerminalError,
    TypeMismatchError,
)
from .export import OnnxExportError, export_onnx
from .framework.logical.meta import TBD
from .framework.logical.model import Connection, IOKey
from .framework.physical.compile import compile
from .framework.physical.compiled import CompiledModel
from .framework.physical.fused import TrainStep
from .framework.types import (
    Dtype,
    bfloat16,
    bool_,
    float16,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    uint8,
)
from .io import ParamsFileError, load_params, read_metadata, save_params
from .optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    CosineAnnealing,
    LinearWarmup,
    RMSprop,
    StepLR,
    clip_by_global_norm,
)
from .parallel import DataParallel, ParallelPlan, TensorParallel
from .types import Constant, DataType, Tensor, epsilon_table

#: the reference Mithril's name for what ``compile`` returns
PhysicalModel = CompiledModel

__version__ = "0.1.0"

__all__ = [
    "SGD", "Adagrad", "Adam", "AdamW", "CosineAnnealing", "LinearWarmup", "RMSprop", "StepLR",
    "clip_by_global_norm", "DataParallel", "ParallelPlan", "TensorParallel",
    "ParamsFileError", "load_params", "read_metadata", "save_params", "OnnxExportError",
    "export_onnx",
    "TBD", "ArgumentError", "ArgumentTypeError", "BackendUnavailableError", "CompileError",
    "CompiledModel", "Connection",
    "compile", "Dtype", "IOKey",
    "InputError", "MithrilError", "ModelFileError", "ModelReuseError", "ShapeMismatchError",
    "TerminalError",
    "TypeMismatchError", "bfloat16", "bool_", "float16", "float32", "float64", "int8", "int16",
    "int32", "int64", "uint8", "Constant", "DataType", "Tensor", "epsilon_table",
    "PhysicalModel", "TrainStep",
]

_BACKENDS = {
    "NumpyBackend": ("numpy", "numpy", "numpy"),
    "TorchBackend": ("torch", "torch", "torch"),
    "JaxBackend": ("jax", "jax", "jax"),
    "MlxBackend": ("mlx", "mlx", "mlx"),
}

#: reference-API names (some are builtins' names: ``ml.int`` is int32, ``ml.float`` float32)
_REFERENCE_NAMES = {
    "Backend": (".backends.backend", "Backend"), "Model": (".models", "Model"),
    "TrainModel": (".models", "TrainModel"), "bool": (".types", "bool_"),
    "int": (".types", "int32"), "float": (".types", "float32"), "double": (".types", "double"),
    "short": (".types", "short"), "long": (".types", "long"), "half": (".types", "half"),
    "PhysicalConstantType": (".types", "PhysicalConstantType"),
    "PhysicalShapeType": (".types", "PhysicalShapeType"),
}


def __getattr__(name: str) -> object:
    """Backends (and ``from_torch``) load their framework only when first used."""
    if name in _BACKENDS:
        package, module, extra = _BACKENDS[name]
        import importlib

        try:
            mod = importlib.import_module(f".backends.{package}", __name__)
        except ImportError as err:
            if err.name is not None and err.name.split(".")[0] == module:
                from .errors import missing_package

                raise missing_package(name, module, extra) from err
            raise
        return getattr(mod, name)
    if name in _REFERENCE_NAMES:  # the reference Mithril's spellings
        import importlib

        module, attr = _REFERENCE_NAMES[name]
        return getattr(importlib.import_module(module, __name__), attr)
    if name == "from_torch":  # imports torch: only when first used
        from . import interop

        return interop.from_torch
    raise AttributeError(f"module 'mithril' has no attribute {name!r}")
