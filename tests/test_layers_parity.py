"""The layer library against ``torch.nn``: same weights, same outputs and gradients.

Each case builds a Mithril layer and the ``torch.nn`` layer it stands for, draws the Mithril
parameters with ``randomize_params`` (identical on every backend), copies them into the torch
module, and compares the output, the gradient w.r.t. the input (compiled with
``trainable_keys={"input"}``) and the gradient of every parameter, in float64, on NumPy,
PyTorch, JAX and MLX. The torch reference runs once per case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import mithril as ml
import mithril.models as mm
from mithril.models import Model, Relu, Reshape, Sigmoid, SiLU, Tanh, Transpose
from mithril.models.attention import MultiheadAttention
from mithril.models.layers import (
    MLP,
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm2d,
    Concat,
    Conv1d,
    Conv2d,
    Embedding,
    Flatten,
    Gelu,
    GroupNorm,
    LayerNorm,
    LeakyRelu,
    Linear,
    LogSoftmax,
    MaxPool1d,
    MaxPool2d,
    Softmax,
    Softplus,
)

BACKENDS = {"numpy": ml.NumpyBackend, "torch": ml.TorchBackend, "jax": ml.JaxBackend,
            "mlx": ml.MlxBackend}
TOL = 1e-9  # float64 throughout; relative to the reference's magnitude (at least 1)


def make_backend(name: str) -> Any:
    return BACKENDS[name](dtype=ml.float64)


def assert_close(actual: Any, desired: np.ndarray, what: str, tol: float = TOL) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == desired.shape, f"{what}: shape {actual.shape} != {desired.shape}"
    scale = max(1.0, float(np.max(np.abs(desired))) if desired.size else 1.0)
    err = float(np.max(np.abs(actual - desired))) if desired.size else 0.0
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} x {scale:.3g}"


class Fn(nn.Module):
    """A torch function as a module (for Concat, Reshape, Transpose)."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


@dataclass
class Case:
    """One layer configuration.

    ``layer`` builds the Mithril layer (added to a fresh ``Model`` with ``terminals``),
    ``module`` the torch module; ``inputs`` maps input names to shapes (in the torch call's
    order); ``names`` maps Mithril parameter keys without the layer's prefix to torch names
    (identity by default).
    """

    layer: Callable[[], Any]
    module: Callable[[], nn.Module]
    inputs: dict[str, tuple[int, ...]]
    terminals: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    scale: float = 1.0  # input scale (e.g. to reach Softplus's threshold)
    int_input: int | None = None  # integer inputs drawn from range(int_input)
    torch_kw: dict[str, Any] = field(default_factory=dict)  # extra forward keywords


def _x(shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {"input": shape}


def _mha(e: int, h: int, **kw: Any) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        return nn.MultiheadAttention(e, h, **{"batch_first": True, **kw})
    return make


def _causal_mask(length: int) -> torch.Tensor:
    return torch.triu(torch.full((length, length), float("-inf"), dtype=torch.float64), 1)


def _torch_kw(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if k != "spatial_dims"}


_QKV = {"query": "query", "key": "key", "value": "value"}
_SELF = {"query": "x", "key": "x", "value": "x"}

CASES: dict[str, Case] = {
    # ---- Linear ----
    "linear": Case(lambda: Linear(5)(input_size=4), lambda: nn.Linear(4, 5), _x((3, 4))),
    "linear_3d_input": Case(lambda: Linear(dimension=5), lambda: nn.Linear(4, 5),
                            _x((2, 3, 4))),
    "linear_no_bias": Case(lambda: Linear(5, use_bias=False)(input_size=4),
                           lambda: nn.Linear(4, 5, bias=False), _x((3, 4))),
    "linear_bias_kw": Case(lambda: Linear(5, bias=False, input_size=4),
                           lambda: nn.Linear(4, 5, bias=False), _x((3, 4))),
    # ---- Conv2d ----
    "conv2d": Case(lambda: Conv2d(3, 4, 3), lambda: nn.Conv2d(3, 4, 3), _x((2, 3, 7, 6))),
    "conv2d_stride_pad": Case(lambda: Conv2d(3, 4, 3, stride=2, padding=1),
                              lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1),
                              _x((2, 3, 7, 6))),
    "conv2d_rect": Case(lambda: Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 2)),
                        lambda: nn.Conv2d(2, 3, (2, 3), stride=(2, 1), padding=(1, 2)),
                        _x((2, 2, 6, 5))),
    "conv2d_same_even_dilated": Case(
        lambda: Conv2d(2, 3, 4, padding="same", dilation=2),
        lambda: nn.Conv2d(2, 3, 4, padding="same", dilation=2), _x((2, 2, 9, 8))),
    "conv2d_same_rect": Case(lambda: Conv2d(2, 3, (2, 3), padding="same"),
                             lambda: nn.Conv2d(2, 3, (2, 3), padding="same"),
                             _x((1, 2, 5, 6))),
    "conv2d_valid": Case(lambda: Conv2d(2, 3, 3, padding="valid"),
                         lambda: nn.Conv2d(2, 3, 3, padding="valid"), _x((2, 2, 6, 6))),
    "conv2d_groups_dilation_no_bias": Case(
        lambda: Conv2d(4, 6, 3, dilation=2, groups=2, bias=False),
        lambda: nn.Conv2d(4, 6, 3, dilation=2, groups=2, bias=False), _x((2, 4, 8, 7))),
    "conv2d_depthwise": Case(lambda: Conv2d(3, 6, 3, padding=1, groups=3),
                             lambda: nn.Conv2d(3, 6, 3, padding=1, groups=3),
                             _x((2, 3, 5, 5))),
    # ---- Conv1d ----
    "conv1d": Case(lambda: Conv1d(3, 4, 3), lambda: nn.Conv1d(3, 4, 3), _x((2, 3, 9))),
    "conv1d_stride_pad_dilation": Case(
        lambda: Conv1d(3, 4, 3, stride=2, padding=2, dilation=2),
        lambda: nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2), _x((2, 3, 10))),
    "conv1d_same_even": Case(lambda: Conv1d(2, 3, 4, padding="same"),
                             lambda: nn.Conv1d(2, 3, 4, padding="same"), _x((2, 2, 7))),
    "conv1d_groups_no_bias": Case(lambda: Conv1d(4, 2, 3, groups=2, bias=False),
                                  lambda: nn.Conv1d(4, 2, 3, groups=2, bias=False),
                                  _x((2, 4, 6))),
    # ---- BatchNorm2d (training step: batch statistics) ----
    "batchnorm2d": Case(lambda: BatchNorm2d(3), lambda: nn.BatchNorm2d(3), _x((4, 3, 5, 4))),
    "batchnorm2d_eps_momentum": Case(lambda: BatchNorm2d(3, eps=1e-3, momentum=0.3),
                                     lambda: nn.BatchNorm2d(3, eps=1e-3, momentum=0.3),
                                     _x((4, 3, 5, 4))),
    "batchnorm2d_no_affine": Case(lambda: BatchNorm2d(3, affine=False),
                                  lambda: nn.BatchNorm2d(3, affine=False), _x((4, 3, 5, 4))),
    "batchnorm2d_no_running_stats": Case(
        lambda: BatchNorm2d(3, track_running_stats=False),
        lambda: nn.BatchNorm2d(3, track_running_stats=False), _x((4, 3, 5, 4))),
    # ---- pooling ----
    "maxpool2d": Case(lambda: MaxPool2d(2), lambda: nn.MaxPool2d(2), _x((2, 3, 6, 7))),
    "maxpool2d_stride_pad": Case(lambda: MaxPool2d(3, stride=2, padding=1),
                                 lambda: nn.MaxPool2d(3, stride=2, padding=1),
                                 _x((2, 3, 7, 6))),
    "maxpool2d_dilation_rect": Case(
        lambda: MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1), dilation=2),
        lambda: nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1), dilation=2),
        _x((2, 2, 7, 8))),
    "maxpool1d": Case(lambda: MaxPool1d(3, stride=2, padding=1),
                      lambda: nn.MaxPool1d(3, stride=2, padding=1), _x((2, 3, 9))),
    "avgpool2d": Case(lambda: AvgPool2d(2), lambda: nn.AvgPool2d(2), _x((2, 3, 6, 7))),
    "avgpool2d_stride_pad": Case(lambda: AvgPool2d(3, stride=2, padding=1),
                                 lambda: nn.AvgPool2d(3, stride=2, padding=1),
                                 _x((2, 3, 7, 6))),
    # ceil_mode / count_include_pad=False / divisor_override (composites of the primitives)
    **{f"pool_{name}": Case(lambda a=args, c=cls: getattr(mm, c)(*a[0], **a[1]),
                            lambda a=args, c=cls: getattr(nn, c)(*a[0], **a[1]), _x(shape))
       for name, cls, args, shape in [
           ("max2d_ceil", "MaxPool2d", ((3, 2), {"ceil_mode": True}), (2, 3, 8, 8)),
           ("max2d_ceil_pad", "MaxPool2d", ((3, 2, 1), {"ceil_mode": True}), (2, 3, 6, 7)),
           ("max2d_ceil_k2", "MaxPool2d", ((2,), {"ceil_mode": True}), (2, 3, 5, 7)),
           ("max2d_ceil_rect_dilation", "MaxPool2d",
            (((3, 2), (2, 1), (1, 0)), {"dilation": (1, 2), "ceil_mode": True}), (2, 3, 6, 7)),
           # the window that would start in the right padding is dropped (PyTorch's rule)
           ("max2d_ceil_last_window", "MaxPool2d", ((2, 2, 1), {"ceil_mode": True}),
            (1, 2, 5, 7)),
           ("avg2d_ceil_last_window", "AvgPool2d", ((2, 2, 1), {"ceil_mode": True}),
            (1, 2, 5, 7)),
           ("max1d_ceil", "MaxPool1d", ((3, 2, 1), {"ceil_mode": True}), (2, 3, 8)),
           ("avg2d_ceil_pad", "AvgPool2d", ((3, 2, 1), {"ceil_mode": True}), (2, 3, 6, 7)),
           ("avg2d_ceil_exclude_pad", "AvgPool2d",
            ((3, 2, 1), {"ceil_mode": True, "count_include_pad": False}), (2, 3, 6, 7)),
           ("avg2d_exclude_pad", "AvgPool2d", ((3, 2, 1), {"count_include_pad": False}),
            (2, 3, 6, 7)),
           ("avg2d_ceil_k2", "AvgPool2d", ((2,), {"ceil_mode": True}), (2, 3, 5, 5)),
           ("avg2d_divisor", "AvgPool2d", ((3, 2, 1), {"divisor_override": 5}), (2, 3, 6, 7)),
       ]},
    "avgpool2d_rect": Case(lambda: AvgPool2d((2, 3), stride=(2, 1)),
                           lambda: nn.AvgPool2d((2, 3), stride=(2, 1)), _x((2, 2, 6, 5))),
    "adaptiveavgpool2d_1": Case(lambda: AdaptiveAvgPool2d(1), lambda: nn.AdaptiveAvgPool2d(1),
                                _x((2, 3, 5, 7))),
    "adaptiveavgpool2d_2x3": Case(lambda: AdaptiveAvgPool2d((2, 3)),
                                  lambda: nn.AdaptiveAvgPool2d((2, 3)), _x((2, 3, 8, 9))),
    "adaptiveavgpool2d_4": Case(lambda: AdaptiveAvgPool2d(4), lambda: nn.AdaptiveAvgPool2d(4),
                                _x((1, 2, 8, 12))),
    "adaptiveavgpool2d_none": Case(lambda: AdaptiveAvgPool2d((None, 2)),
                                   lambda: nn.AdaptiveAvgPool2d((None, 2)), _x((2, 2, 3, 6))),
    # ---- Flatten ----
    "flatten": Case(lambda: Flatten(), lambda: nn.Flatten(), _x((2, 3, 4, 5))),
    "flatten_all": Case(lambda: Flatten(start_dim=0), lambda: nn.Flatten(start_dim=0),
                        _x((2, 3, 4))),
    "flatten_middle": Case(lambda: Flatten(1, 2), lambda: nn.Flatten(1, 2), _x((2, 3, 4, 5))),
    "flatten_end_dim": Case(lambda: Flatten(end_dim=-2), lambda: nn.Flatten(end_dim=-2),
                            _x((2, 3, 4, 5))),
    # ---- LayerNorm / GroupNorm ----
    "layernorm": Case(lambda: LayerNorm(6), lambda: nn.LayerNorm(6), _x((2, 3, 6))),
    "layernorm_2d_shape": Case(lambda: LayerNorm((3, 6), eps=1e-3),
                               lambda: nn.LayerNorm((3, 6), eps=1e-3), _x((2, 3, 6))),
    "layernorm_no_affine": Case(lambda: LayerNorm(6, elementwise_affine=False),
                                lambda: nn.LayerNorm(6, elementwise_affine=False),
                                _x((4, 6))),
    "layernorm_no_bias": Case(lambda: LayerNorm(6, bias=False),
                              lambda: nn.LayerNorm(6, bias=False), _x((4, 6))),
    "groupnorm": Case(lambda: GroupNorm(2, 6), lambda: nn.GroupNorm(2, 6), _x((3, 6, 4, 5))),
    "groupnorm_one_group_eps": Case(lambda: GroupNorm(1, 4, eps=1e-3),
                                    lambda: nn.GroupNorm(1, 4, eps=1e-3), _x((2, 4, 3, 3))),
    "groupnorm_per_channel_1d": Case(lambda: GroupNorm(4, 4), lambda: nn.GroupNorm(4, 4),
                                     _x((2, 4, 7))),
    "groupnorm_no_affine": Case(lambda: GroupNorm(3, 6, affine=False),
                                lambda: nn.GroupNorm(3, 6, affine=False), _x((2, 6, 3, 3))),
    # ---- Embedding ----
    "embedding": Case(lambda: Embedding(10, 4), lambda: nn.Embedding(10, 4), _x((3, 5)),
                      int_input=10),
    # ---- MultiheadAttention ----
    "mha_self": Case(lambda: MultiheadAttention(8, 2), _mha(8, 2), {"x": (2, 5, 8)},
                     terminals=_SELF),
    "mha_cross": Case(lambda: MultiheadAttention(8, 4), _mha(8, 4),
                      {"query": (2, 3, 8), "key": (2, 5, 8), "value": (2, 5, 8)},
                      terminals=_QKV),
    "mha_no_bias": Case(lambda: MultiheadAttention(6, 3, bias=False), _mha(6, 3, bias=False),
                        {"x": (2, 4, 6)}, terminals=_SELF),
    "mha_causal": Case(lambda: MultiheadAttention(8, 2, is_causal=True), _mha(8, 2),
                       {"x": (2, 5, 8)}, terminals=_SELF,
                       torch_kw={"attn_mask": _causal_mask(5), "is_causal": True}),
    "mha_seq_first": Case(lambda: MultiheadAttention(8, 2, batch_first=False),
                          _mha(8, 2, batch_first=False),
                          {"query": (3, 2, 8), "key": (4, 2, 8), "value": (4, 2, 8)},
                          terminals=_QKV),
    "mha_kdim_vdim": Case(lambda: MultiheadAttention(8, 2, kdim=5, vdim=3),
                          _mha(8, 2, kdim=5, vdim=3),
                          {"query": (2, 3, 8), "key": (2, 4, 5), "value": (2, 4, 3)},
                          terminals=_QKV),
    # ---- ConvTranspose1d / ConvTranspose2d (PyTorch's argument order) ----
    **{f"{cls.lower()}_{name}": Case(lambda a=args, c=cls: getattr(mm, c)(*a[0], **a[1]),
                                     lambda a=args, c=cls: getattr(nn, c)(*a[0], **a[1]),
                                     _x(shape))
       for cls, name, args, shape in [
           ("ConvTranspose2d", "plain", ((3, 4, 3), {}), (2, 3, 5, 6)),
           ("ConvTranspose2d", "stride_pad_outpad", ((3, 4, 3, 2, 1, 1), {}), (2, 3, 5, 4)),
           ("ConvTranspose2d", "rect_dilation_no_bias",
            ((2, 3, (2, 3)), {"stride": (2, 1), "padding": (0, 1), "dilation": (1, 2),
                              "bias": False}), (1, 2, 4, 5)),
           ("ConvTranspose2d", "groups",
            ((4, 6, 3), {"stride": 2, "groups": 2, "output_padding": 1}), (2, 4, 3, 3)),
           ("ConvTranspose2d", "dilation_outpad",
            ((2, 2, 3), {"stride": 1, "dilation": 3, "output_padding": 2}), (1, 2, 4, 4)),
           ("ConvTranspose1d", "plain", ((3, 4, 3), {}), (2, 3, 7)),
           ("ConvTranspose1d", "stride_groups",
            ((4, 2, 4), {"stride": 3, "padding": 1, "output_padding": 2, "groups": 2}),
            (2, 4, 6)),
       ]},
    # ---- Upsample / F.interpolate ----
    **{f"upsample_{name}": Case(lambda kw=kw: mm.Upsample(**kw),
                                lambda kw=kw: nn.Upsample(**_torch_kw(kw)), _x(shape))
       for name, kw, shape in [
           ("nearest_x2", {"scale_factor": 2}, (2, 3, 4, 5)),
           ("nearest_x3_1", {"scale_factor": (3, 1)}, (1, 2, 3, 4)),
           ("nearest_size_up_down", {"size": (6, 3)}, (2, 2, 4, 6)),
           ("nearest_size_4_to_6", {"size": (6, 9)}, (1, 2, 4, 6)),
           ("nearest_float_scale", {"scale_factor": (1.5, 0.6)}, (1, 2, 4, 6)),
           ("nearest_1d", {"scale_factor": 2, "spatial_dims": 1}, (2, 3, 5)),
           ("bilinear_x2", {"scale_factor": 2, "mode": "bilinear"}, (2, 3, 4, 5)),
           ("bilinear_size", {"size": (7, 3), "mode": "bilinear"}, (1, 2, 4, 5)),
           ("bilinear_align", {"size": (7, 9), "mode": "bilinear", "align_corners": True},
            (1, 2, 4, 5)),
           ("bilinear_float_scale", {"scale_factor": 1.7, "mode": "bilinear"}, (1, 2, 3, 4)),
           ("linear_align", {"scale_factor": 2.5, "mode": "linear", "align_corners": True},
            (2, 3, 5)),
           ("linear_size", {"size": 8, "mode": "linear"}, (2, 3, 5)),
       ]},
    # ---- activations ----
    "relu": Case(Relu, nn.ReLU, _x((3, 7))),
    "gelu": Case(Gelu, nn.GELU, _x((3, 7)), scale=3.0),
    "gelu_tanh": Case(lambda: Gelu(approximate="tanh"), lambda: nn.GELU(approximate="tanh"),
                      _x((3, 7)), scale=3.0),
    "silu": Case(SiLU, nn.SiLU, _x((3, 7)), scale=3.0),
    "sigmoid": Case(Sigmoid, nn.Sigmoid, _x((3, 7)), scale=3.0),
    "tanh": Case(Tanh, nn.Tanh, _x((3, 7)), scale=3.0),
    "softmax_dim1": Case(lambda: Softmax(dim=1), lambda: nn.Softmax(dim=1), _x((2, 4, 3))),
    "softmax_last": Case(lambda: Softmax(dim=-1), lambda: nn.Softmax(dim=-1), _x((2, 4, 3))),
    "softmax_axis": Case(lambda: Softmax(axis=0), lambda: nn.Softmax(dim=0), _x((2, 4, 3))),
    "logsoftmax_dim1": Case(lambda: LogSoftmax(dim=1), lambda: nn.LogSoftmax(dim=1),
                            _x((2, 4, 3))),
    "leakyrelu": Case(LeakyRelu, nn.LeakyReLU, _x((3, 7))),
    "leakyrelu_slope": Case(lambda: LeakyRelu(negative_slope=0.2),
                            lambda: nn.LeakyReLU(negative_slope=0.2), _x((3, 7))),
    "softplus": Case(Softplus, nn.Softplus, _x((4, 7)), scale=10.0),
    "softplus_beta_threshold": Case(lambda: Softplus(beta=2.0, threshold=5.0),
                                    lambda: nn.Softplus(beta=2.0, threshold=5.0), _x((4, 7)),
                                    scale=4.0),
    # ---- Concat / Reshape / Transpose (torch.cat / reshape / permute) ----
    "concat_dim1": Case(lambda: Concat(n=3, dim=1), lambda: Fn(lambda *xs: torch.cat(xs, 1)),
                        {"a": (2, 1, 3), "b": (2, 4, 3), "c": (2, 2, 3)},
                        terminals={"input1": "a", "input2": "b", "input3": "c"}),
    "concat_axis_default": Case(lambda: Concat(), lambda: Fn(lambda *xs: torch.cat(xs)),
                                {"a": (1, 3), "b": (2, 3)},
                                terminals={"input1": "a", "input2": "b"}),
    "reshape": Case(lambda: Reshape(shape=(3, -1)), lambda: Fn(lambda x: x.reshape(3, -1)),
                    _x((2, 3, 4))),
    "transpose": Case(lambda: Transpose(axes=(2, 0, 1)),
                      lambda: Fn(lambda x: x.permute(2, 0, 1)), _x((2, 3, 4))),
    # ---- MLP ----
    "mlp": Case(lambda: MLP(activations=[Relu(), Tanh(), None], dimensions=[6, 5, 3],
                            input_size=4),
                lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.Tanh(),
                                      nn.Linear(5, 3)),
                _x((3, 4)),
                names={"weight0": "0.weight", "bias0": "0.bias",
                       "weight1": "2.weight", "bias1": "2.bias",
                       "weight2": "4.weight", "bias2": "4.bias"}),
    "mlp_no_bias_last_act": Case(
        lambda: MLP([Sigmoid(), Relu()], [5, 2], use_bias=False),
        lambda: nn.Sequential(nn.Linear(3, 5, bias=False), nn.Sigmoid(),
                              nn.Linear(5, 2, bias=False), nn.ReLU()),
        _x((4, 3)), names={"weight0": "0.weight", "weight1": "2.weight"}),
}


def build(case: Case) -> Model:
    model = Model()
    layer = case.layer()
    model |= layer(**case.terminals, output="output") if case.terminals else layer
    return model


def draw_inputs(case: Case, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if case.int_input is not None:
        return {k: rng.integers(0, case.int_input, s) for k, s in case.inputs.items()}
    return {k: rng.standard_normal(s) * case.scale for k, s in case.inputs.items()}


@cache
def reference(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray,
                                  np.ndarray, dict[str, np.ndarray]]:
    """(parameters, inputs, output gradient, torch output, torch gradients), once per case."""
    case = CASES[name]
    pm = ml.compile(build(case), ml.NumpyBackend(dtype=ml.float64),
                    shapes=dict(case.inputs), jit=False)
    prefix = next(iter(build(case).children)).class_name
    # PyTorch's initialisation, then moved: norm scales and shifts leave their 1 / 0 defaults
    # (a swapped or dropped affine parameter must change the numbers)
    shift = np.random.default_rng(5)
    params = {k: np.asarray(v) + 0.3 * shift.standard_normal(np.shape(v))
              for k, v in pm.randomize_params(seed=0).items()}
    inputs = draw_inputs(case)
    torch.manual_seed(0)
    module = case.module().double()
    own = dict(module.named_parameters())
    tnames = {k: case.names.get(k[len(prefix) + 1:], k[len(prefix) + 1:]) for k in params}
    assert sorted(tnames.values()) == sorted(own), f"parameters {tnames} vs torch {list(own)}"
    with torch.no_grad():
        for k, tname in tnames.items():
            own[tname].copy_(torch.from_numpy(params[k]))
    xs = [torch.tensor(v, requires_grad=case.int_input is None) for v in inputs.values()]
    if case.terminals == _SELF:
        xs = [xs[0], xs[0], xs[0]]
    out = module(*xs, **case.torch_kw)
    out = out[0] if isinstance(out, tuple) else out  # MultiheadAttention: (output, weights)
    g = np.random.default_rng(2).standard_normal(tuple(out.shape))
    out.backward(torch.from_numpy(g))
    grads = {k: own[t].grad.numpy() for k, t in tnames.items()}
    if case.int_input is None:
        for k, x in zip(inputs, xs, strict=False):
            grads[k] = x.grad.numpy()
    return params, inputs, g, out.detach().numpy(), grads


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("case_name", list(CASES))
def test_forward_and_gradients_match_torch(case_name: str, backend_name: str) -> None:
    case = CASES[case_name]
    params, inputs, g, out_ref, grads_ref = reference(case_name)
    backend = make_backend(backend_name)
    trainable = set() if case.int_input is not None else set(inputs)
    pm = ml.compile(build(case), backend, shapes=dict(case.inputs), trainable_keys=trainable,
                    jit=False)
    feed = {k: backend.array(v) for k, v in params.items()}
    data = {}
    for k, v in inputs.items():
        if k in trainable:
            feed[k] = backend.array(v)
        else:
            data[k] = backend.array(v, dtype=ml.int64)
    outs, grads = pm.evaluate(feed, data, output_gradients={"output": backend.array(g)})
    assert_close(backend.to_numpy(outs["output"]), out_ref, f"{case_name} output")
    assert set(grads) == set(grads_ref)
    for k, ref in grads_ref.items():
        assert_close(backend.to_numpy(grads[k]), ref, f"{case_name} gradient of {k}")


# ---- BatchNorm2d: running statistics over training steps, then inference -------------------
BN_CASES = {
    "default": ({}, (4, 3, 5, 4)),
    "momentum_eps": ({"momentum": 0.25, "eps": 1e-3}, (3, 3, 4, 4)),
    "no_affine": ({"affine": False}, (4, 3, 3, 5)),
    "no_running_stats": ({"track_running_stats": False}, (4, 3, 3, 3)),
}


@pytest.mark.parametrize("backend_name", list(BACKENDS))
@pytest.mark.parametrize("bn_case", list(BN_CASES))
def test_batchnorm2d_running_stats_and_inference(bn_case: str, backend_name: str) -> None:
    kw, shape = BN_CASES[bn_case]
    backend = make_backend(backend_name)
    model = Model()
    model |= BatchNorm2d(3, **kw)
    train = ml.compile(model, backend, shapes={"input": list(shape)}, jit=False)
    infer = ml.compile(model, backend, shapes={"input": list(shape)}, inference=True,
                       jit=False)
    torch_bn = nn.BatchNorm2d(3, **kw).double()
    rng = np.random.default_rng(3)
    # scale and shift away from 1 / 0, running statistics away from 0 / 1
    params = {k: backend.array(backend.to_numpy(v) + 0.4 * rng.standard_normal(v.shape))
              for k, v in train.randomize_params(seed=0).items()}
    if kw.get("track_running_stats", True):
        train.state = {"batchnorm2d.running_mean": backend.array(rng.standard_normal(3)),
                       "batchnorm2d.running_var": backend.array(rng.uniform(0.5, 2.0, 3))}
    with torch.no_grad():
        for k, v in {**params, **train.state}.items():
            getattr(torch_bn, k.split(".")[-1]).copy_(torch.from_numpy(backend.to_numpy(v)))
        for step in range(5):
            x = rng.standard_normal(shape) * (step + 1) + step  # statistics that move
            out = train.evaluate(params, {"input": backend.array(x)})["output"]
            torch_bn.train()
            ref = torch_bn(torch.from_numpy(x)).numpy()
            assert_close(backend.to_numpy(out), ref, f"step {step} output")
            if kw.get("track_running_stats", True):
                for k in ("running_mean", "running_var"):
                    assert_close(backend.to_numpy(train.state[f"batchnorm2d.{k}"]),
                                 getattr(torch_bn, k).numpy(), f"step {step} {k}")
            else:
                assert train.state == {}
        infer.state = train.state
        x = rng.standard_normal(shape)
        out = infer.evaluate(params, {"input": backend.array(x)})["output"]
        torch_bn.eval()
        assert_close(backend.to_numpy(out), torch_bn(torch.from_numpy(x)).numpy(),
                     "inference output")
        if kw.get("track_running_stats", True):  # inference leaves the statistics alone
            for k in ("running_mean", "running_var"):
                assert_close(backend.to_numpy(infer.state[f"batchnorm2d.{k}"]),
                             getattr(torch_bn, k).numpy(), f"inference {k}")


@pytest.mark.parametrize("backend_name", ["jax", "mlx"])
@pytest.mark.parametrize("case_name", ["mha_causal", "batchnorm2d", "adaptiveavgpool2d_2x3",
                                       "upsample_bilinear_size", "upsample_nearest_float_scale",
                                       "pool_max2d_ceil_last_window",
                                       "pool_avg2d_ceil_exclude_pad",
                                       "convtranspose2d_groups"])
def test_jit_matches_torch(case_name: str, backend_name: str) -> None:
    """The same numbers through the framework's JIT (on by default for JAX and MLX)."""
    case = CASES[case_name]
    params, inputs, g, out_ref, grads_ref = reference(case_name)
    backend = make_backend(backend_name)
    pm = ml.compile(build(case), backend, shapes=dict(case.inputs),
                    trainable_keys=set(inputs), jit=True)
    feed = {k: backend.array(v) for k, v in {**params, **inputs}.items()}
    outs, grads = pm.evaluate(feed, {}, output_gradients={"output": backend.array(g)})
    assert_close(backend.to_numpy(outs["output"]), out_ref, "output")
    for k, ref in grads_ref.items():
        assert_close(backend.to_numpy(grads[k]), ref, f"gradient of {k}")


# ---- loading a torch state_dict, keys as they are -----------------------------------------
def test_torch_state_dict_maps_onto_multihead_attention() -> None:
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(8, 2, batch_first=True).double()
    model = Model()
    model |= MultiheadAttention(8, 2, name="attn")(query="x", key="x", value="x",
                                                    output="output")
    backend = make_backend("numpy")
    pm = ml.compile(model, backend, shapes={"x": [2, 4, 8]})
    params = {f"attn.{k}": backend.array(v.numpy()) for k, v in ref.state_dict().items()}
    assert set(params) == set(pm.param_keys)
    x = np.random.default_rng(0).standard_normal((2, 4, 8))
    out = pm.evaluate(params, {"x": backend.array(x)})["output"]
    with torch.no_grad():
        t = torch.from_numpy(x)
        assert_close(out, ref(t, t, t)[0].numpy(), "output")


def test_mha_inside_a_chain_uses_query_as_canonical_input() -> None:
    model = Model()
    model |= Linear(8)(input="input")
    model += MultiheadAttention(8, 2)(key="input", value="input")
    pm = ml.compile(model, make_backend("numpy"), shapes={"input": [2, 3, 8]})
    assert pm.shapes["output"] == [2, 3, 8]


# ---- shapes, defaults and errors ----------------------------------------------------------
def test_adaptive_avg_pool_rejects_sizes_that_are_not_divisible() -> None:
    model = Model()
    model |= AdaptiveAvgPool2d((2, 3))
    with pytest.raises(ml.ShapeMismatchError, match="not divisible by the output size"):
        ml.compile(model, make_backend("numpy"), shapes={"input": [1, 2, 7, 9]})
    with pytest.raises(ml.ShapeMismatchError, match="not divisible by the output size"):
        model.set_shapes(input=[1, 2, 8, 10])
    model.set_shapes(input=[1, 2, 8, 9])  # the failed attempt left the model as it was
    assert model.shapes["output"] == [1, 2, 2, 3]


def test_adaptive_avg_pool_global_works_for_any_size() -> None:
    model = Model()
    model |= AdaptiveAvgPool2d(1)
    backend = make_backend("numpy")
    pm = ml.compile(model, backend)  # no shapes: works for any input
    for shape in ((1, 2, 3, 5), (2, 1, 7, 4)):
        x = np.random.default_rng(0).standard_normal(shape)
        out = pm.evaluate({}, {"input": backend.array(x)})["output"]
        assert_close(out, x.mean(axis=(2, 3), keepdims=True), str(shape))


def test_argument_spellings_and_errors() -> None:
    assert Softmax(dim=1).conns["axis"].meta.value == 1
    assert Softmax(axis=2).conns["axis"].meta.value == 2
    assert Softmax().conns["axis"].meta.value == -1
    assert LeakyRelu(negative_slope=0.2).conns["slope"].meta.value == 0.2
    assert LeakyRelu(slope=0.3).conns["slope"].meta.value == 0.3
    assert Gelu(approximate="tanh").conns["approximate"].meta.value is True
    assert Concat(n=2, dim=1).conns["axis"].meta.value == 1
    with pytest.raises(TypeError, match="two names for one argument"):
        Softmax(dim=1, axis=0)
    with pytest.raises(ValueError, match="approximate"):
        Gelu(approximate="fast")
    with pytest.raises(ValueError, match="same"):
        Conv2d(2, 3, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding"):
        Conv2d(2, 3, 3, padding="full")
    with pytest.raises(ValueError, match="divisible"):
        Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="divisible"):
        GroupNorm(4, 6)
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="dropout"):
        MultiheadAttention(8, 2, dropout=1.5)
    with pytest.raises(ValueError, match="return_indices"):
        MaxPool2d(2, return_indices=True)
    with pytest.raises(ValueError, match="at most half"):
        MaxPool2d(2, padding=2, ceil_mode=True)
    with pytest.raises(ValueError, match="divisor_override"):
        AvgPool2d(2, divisor_override=0)
    # the defaults stay the catalogue's primitive; the other options build a composite
    assert isinstance(AvgPool2d(2, count_include_pad=False), AvgPool2d)  # no padding: the same
    assert not isinstance(AvgPool2d(3, padding=1, count_include_pad=False), AvgPool2d)
    assert MaxPool2d(2, 2, 0, 1, False, True).class_name == "maxpool2d"  # positional ceil_mode
    assert not isinstance(MaxPool2d(2, 2, 0, 1, False, True), MaxPool2d)
    with pytest.raises(ValueError, match="one activation"):
        MLP([Relu()], [4, 2])
    with pytest.raises(ValueError, match="probability"):
        mm.Dropout(1.5)


def test_default_initialisers_follow_torch() -> None:
    model = Model()
    model |= MultiheadAttention(8, 2)(query="x", key="x", value="x", output="output")
    model |= GroupNorm(2, 4)(input="g", output="g_out")
    params = ml.compile(model, make_backend("numpy"),
                        shapes={"x": [1, 2, 8], "g": [1, 4, 3]}).randomize_params(seed=0)
    assert np.all(params["multiheadattention.in_proj_bias"] == 0)
    assert np.all(params["multiheadattention.out_proj.bias"] == 0)
    assert np.abs(params["multiheadattention.out_proj.weight"]).max() <= 1 / np.sqrt(8)
    assert np.all(params["groupnorm.weight"] == 1) and np.all(params["groupnorm.bias"] == 0)


NEW_NAMES = ["AdaptiveAvgPool2d", "Concat", "Gelu", "GroupNorm", "LeakyRelu", "LogSoftmax",
             "MLP", "Softmax", "Softplus"]


def test_new_layers_are_exported_from_mithril_models() -> None:
    import mithril.models.attention as attention
    import mithril.models.layers as layers

    for name in NEW_NAMES:
        if name == "Concat":  # one name for both APIs: the guide's arguments give the guide's layer
            assert isinstance(mm.Concat(n=2, dim=1), layers.Concat)
            continue
        assert getattr(mm, name, None) is getattr(layers, name), name
    assert getattr(mm, "MultiheadAttention", None) is attention.MultiheadAttention
