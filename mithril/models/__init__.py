"""Models users compose: ``Model``, the catalogue's primitives, and the layer library."""

from ..framework.logical.meta import TBD
from ..framework.logical.model import BaseModel, Connection, IOKey, Model, Operator
from ..types import Tensor
from . import primitives as _primitives
from .attention import MultiheadAttention
from .conv_transpose import ConvTranspose1d, ConvTranspose2d
from .layers import *  # noqa: F403
from .layers import AvgPool2d as AvgPool2D

# Reference-API spellings of the guide's layers
from .layers import BatchNorm2d as BatchNorm2D
from .layers import Conv1d as Convolution1D
from .layers import Conv2d as Convolution2D
from .layers import MaxPool1d as MaxPool1D
from .layers import MaxPool2d as MaxPool2D
from .layers import __all__ as _layers_all
from .losses import *  # noqa: F403
from .losses import __all__ as _losses_all
from .primitives import *  # noqa: F403
from .recurrent import GRU, LSTM, RNN, GRUCell
from .reference import *  # noqa: F403
from .reference import __all__ as _reference_all

# the reference's terminal names and defaults (the catalogue's stay in .primitives)
from .reference_ops import *  # noqa: F403
from .reference_ops import __all__ as _reference_ops_all
from .reference_recurrent import EncoderDecoderInference, LSTMCell, RNNCell
from .resize import Interpolate, Upsample
from .scan import Scan
from .train import TrainModel

__all__ = ["TBD", "Tensor",
           "BaseModel", "Connection", "IOKey", "Model", "Operator", "BatchNorm2D",
           "Convolution1D", "Convolution2D", "MaxPool1D", "MaxPool2D", "AvgPool2D",
           "TrainModel", "MultiheadAttention", "GRU", "LSTM", "RNN", "Scan", "GRUCell", "LSTMCell",
           "RNNCell", "EncoderDecoderInference", "ConvTranspose1d", "ConvTranspose2d",
           "Interpolate", "Upsample",
           *_layers_all,
           *_primitives.__all__, *_losses_all, *_reference_all,
           *_reference_ops_all]
