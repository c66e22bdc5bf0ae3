"""Hand-written framework code for the benchmark models: what a user would write without us.

Each ``*_step(params, x, g)`` computes the forward pass and the parameter gradients for the
output cotangent ``g`` (the same work as ``evaluate(..., output_gradients=...)``).
Parameters use Mithril's keys and PyTorch's layouts, so the same values feed both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CONV_LAYERS = [("conv2d", "batchnorm2d"), ("conv2d_1", "batchnorm2d_1")]


def mlp_keys(depth: int) -> list[str]:
    names = ["linear"] + [f"linear_{i}" for i in range(1, depth)]
    return names


# ---------------------------------------------------------------------------------------------
# PyTorch: nn.Module, eager
# ---------------------------------------------------------------------------------------------
def torch_convnet(params: dict[str, Any]) -> Callable[[Any, Any], Any]:
    import torch
    from torch import nn

    class ConvNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(32)
            self.fc = nn.Linear(2048, 10)

        def forward(self, x: Any) -> Any:
            x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
            x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
            return self.fc(torch.flatten(x, 1))

    net = ConvNet()
    names = {"conv1": "conv2d", "bn1": "batchnorm2d", "conv2": "conv2d_1",
             "bn2": "batchnorm2d_1", "fc": "linear"}
    with torch.no_grad():
        for tname, p in net.named_parameters():
            layer, kind = tname.split(".")
            p.copy_(params[f"{names[layer]}.{kind}"])

    def step(x: Any, g: Any) -> Any:
        net.zero_grad(set_to_none=True)
        out = net(x)
        out.backward(g)
        return out

    return step


def torch_mlp(params: dict[str, Any], depth: int) -> Callable[[Any, Any], Any]:
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    for i, key in enumerate(mlp_keys(depth)):
        w = params[f"{key}.weight"]
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(params[f"{key}.bias"])
        layers.append(lin)
        if i < depth - 1:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)

    def step(x: Any, g: Any) -> Any:
        net.zero_grad(set_to_none=True)
        out = net(x)
        out.backward(g)
        return out

    return step


# ---------------------------------------------------------------------------------------------
# JAX: pure functions under jax.jit
# ---------------------------------------------------------------------------------------------
def jax_convnet() -> Callable[[dict[str, Any], Any, Any], Any]:
    import jax
    import jax.numpy as jnp
    from jax import lax

    def conv(x: Any, w: Any, b: Any) -> Any:
        y = lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + b[None, :, None, None]

    def bn(x: Any, w: Any, b: Any) -> Any:
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = x.var(axis=(0, 2, 3), keepdims=True)
        return (x - mean) / jnp.sqrt(var + 1e-5) * w[None, :, None, None] + b[None, :, None, None]

    def pool(x: Any) -> Any:
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def forward(p: dict[str, Any], x: Any) -> Any:
        for c, n in CONV_LAYERS:
            x = conv(x, p[f"{c}.weight"], p[f"{c}.bias"])
            x = pool(jax.nn.relu(bn(x, p[f"{n}.weight"], p[f"{n}.bias"])))
        x = x.reshape(x.shape[0], -1)
        return x @ p["linear.weight"].T + p["linear.bias"]

    @jax.jit
    def step(p: dict[str, Any], x: Any, g: Any) -> Any:
        out, vjp = jax.vjp(lambda q: forward(q, x), p)
        return out, vjp(g)[0]

    return step


def jax_mlp(depth: int) -> Callable[[dict[str, Any], Any, Any], Any]:
    import jax

    keys = mlp_keys(depth)

    def forward(p: dict[str, Any], x: Any) -> Any:
        for i, k in enumerate(keys):
            x = x @ p[f"{k}.weight"].T + p[f"{k}.bias"]
            if i < len(keys) - 1:
                x = jax.nn.relu(x)
        return x

    @jax.jit
    def step(p: dict[str, Any], x: Any, g: Any) -> Any:
        out, vjp = jax.vjp(lambda q: forward(q, x), p)
        return out, vjp(g)[0]

    return step


# ---------------------------------------------------------------------------------------------
# MLX: functions under mx.compile (MLX convolutions are channels-last, as MLX code is written)
# ---------------------------------------------------------------------------------------------
def mlx_convnet() -> Callable[[dict[str, Any], Any, Any], Any]:
    import mlx.core as mx

    def bn(x: Any, w: Any, b: Any) -> Any:
        mean = mx.mean(x, axis=(0, 1, 2), keepdims=True)
        var = mx.var(x, axis=(0, 1, 2), keepdims=True)
        return (x - mean) * mx.rsqrt(var + 1e-5) * w + b

    def pool(x: Any) -> Any:
        n, h, w, c = x.shape
        return mx.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))

    def forward(p: dict[str, Any], x: Any) -> Any:
        x = mx.transpose(x, (0, 2, 3, 1))  # NCHW data, as the other frameworks get it
        for c, n in CONV_LAYERS:
            w = mx.transpose(p[f"{c}.weight"], (0, 2, 3, 1))
            x = mx.conv2d(x, w, padding=1) + p[f"{c}.bias"]
            x = pool(mx.maximum(bn(x, p[f"{n}.weight"], p[f"{n}.bias"]), 0))
        x = mx.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        return x @ p["linear.weight"].T + p["linear.bias"]

    return _mlx_step(forward)


def _mlx_step(forward: Callable[[dict[str, Any], Any], Any]
              ) -> Callable[[dict[str, Any], Any, Any], Any]:
    """``mx.vjp`` takes lists of arrays: flatten the parameters in a fixed key order."""
    import mlx.core as mx

    def step(p: dict[str, Any], x: Any, g: Any) -> Any:
        keys = sorted(p)

        def f(*arrays: Any) -> Any:
            return forward(dict(zip(keys, arrays, strict=True)), x)

        outs, grads = mx.vjp(f, [p[k] for k in keys], [g])
        return outs[0], dict(zip(keys, grads, strict=True))

    return mx.compile(step)


def mlx_mlp(depth: int) -> Callable[[dict[str, Any], Any, Any], Any]:
    import mlx.core as mx

    keys = mlp_keys(depth)

    def forward(p: dict[str, Any], x: Any) -> Any:
        for i, k in enumerate(keys):
            x = x @ p[f"{k}.weight"].T + p[f"{k}.bias"]
            if i < len(keys) - 1:
                x = mx.maximum(x, 0)
        return x

    return _mlx_step(forward)
