"""An independent reference for generated models: each spec evaluated with PyTorch ops.

:func:`evaluate_spec` walks a :class:`tests.model_generator.Spec` and computes it directly
with ``torch`` / ``torch.nn.functional`` in float64 (no Mithril code runs): outputs, the
gradients of ``sum_k <output_gradient_k, output_k>`` with respect to every parameter (by
``torch.autograd``) and the new state (BatchNorm running statistics, as ``F.batch_norm``
updates them). Parameter and state keys are derived here from Mithril's documented naming rule
(a layer's key is its lower-cased class name, siblings of one class numbered in order,
``name=`` overriding, nested models prefixing their children's keys); that the compiled
model's keys are exactly these is part of the check.

Layers follow PyTorch's semantics as the layer library documents them (``batch_first``
attention, ``count_include_pad`` average pooling, unbiased running variance, ...), written
out by hand where PyTorch has no single functional op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tests.model_generator import (
    Algebra,
    AuxInput,
    Block,
    Branch,
    Built,
    Expose,
    Inputs,
    Layer,
    Residual,
    Spec,
    hp_dict,
)

Tensor = torch.Tensor

#: the key prefix of each layer kind (its Mithril class name, lower-cased)
CLASS_KEY = {"linear": "linear", "mlp": "mlp", "conv2d": "conv2d", "conv1d": "conv1d",
             "batch_norm2d": "batchnorm2d", "group_norm": "groupnorm",
             "layer_norm": "layernorm", "attention": "multiheadattention"}


@dataclass
class _Scope:
    path: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)

    def key(self, cls: str) -> str:
        """The next key for a child of class ``cls``: ``cls``, ``cls_1``, ..."""
        i = self.counts.get(cls, 0)
        self.counts[cls] = i + 1
        return cls if i == 0 else f"{cls}_{i}"

    def prefix(self, local: str) -> str:
        return ".".join((*self.path, local))


class _Run:
    """One evaluation: parameters and state by key, data, outputs and new state."""

    def __init__(self, params: dict[str, Tensor], data: dict[str, Tensor],
                 state: dict[str, Tensor], inference: bool) -> None:
        self.params, self.data, self.state = params, data, state
        self.inference = inference
        self.used: set[str] = set()
        self.new_state: dict[str, Tensor] = {}
        self.exposed: dict[str, Tensor] = {}

    def param(self, key: str) -> Tensor:
        if key not in self.params:
            raise KeyError(f"the reference expects a parameter {key!r}; the compiled model "
                           f"has {sorted(self.params)}")
        self.used.add(key)
        return self.params[key]


def _pads(padding: Any, k: int, d: int) -> tuple[int, int]:
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        total = d * (k - 1)
        return (total // 2, total - total // 2)
    return (padding, padding)


def _conv(r: _Run, key: str, x: Tensor, h: dict[str, Any], nd: int) -> Tensor:
    w = r.param(f"{key}.weight")
    b = r.param(f"{key}.bias") if h["bias"] else None
    lo, hi = _pads(h["padding"], h["k"], h["dilation"])
    x = F.pad(x, (lo, hi) * nd)  # the same padding on every spatial side
    fn = F.conv2d if nd == 2 else F.conv1d
    return fn(x, w, b, stride=h["stride"], dilation=h["dilation"], groups=h["groups"])


def _batch_norm(r: _Run, key: str, x: Tensor, h: dict[str, Any]) -> Tensor:
    w = r.param(f"{key}.weight") if h["affine"] else None
    b = r.param(f"{key}.bias") if h["affine"] else None
    dims = (0, 2, 3)
    if h["track"]:
        mean_key, var_key = f"{key}.running_mean", f"{key}.running_var"
        rm, rv = r.state[mean_key], r.state[var_key]
        if r.inference:
            mean, var = rm, rv
            r.new_state[mean_key], r.new_state[var_key] = rm, rv
        else:
            mean = x.mean(dims)
            var = x.var(dims, correction=0)
            n = x.numel() // x.shape[1]
            mom = h["momentum"]
            with torch.no_grad():
                r.new_state[mean_key] = (1 - mom) * rm + mom * mean
                r.new_state[var_key] = (1 - mom) * rv + mom * var * n / (n - 1)
    else:
        mean, var = x.mean(dims), x.var(dims, correction=0)
    shape = (1, -1, 1, 1)
    y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + h["eps"])
    if w is not None:
        y = y * w.reshape(shape) + b.reshape(shape)
    return y


def _attention(r: _Run, key: str, x: Tensor, h: dict[str, Any]) -> Tensor:
    n, seq, e = x.shape
    heads = h["heads"]
    w = r.param(f"{key}.in_proj_weight")
    b = r.param(f"{key}.in_proj_bias") if h["bias"] else None
    proj = x @ w.T + (0 if b is None else b)
    q, k, v = (proj[..., i * e:(i + 1) * e].reshape(n, seq, heads, e // heads).transpose(1, 2)
               for i in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(e // heads)
    if h["causal"]:
        mask = torch.ones(seq, seq, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, seq, e)
    wo = r.param(f"{key}.out_proj.weight")
    y = y @ wo.T
    if h["bias"]:
        y = y + r.param(f"{key}.out_proj.bias")
    return y


def _layer(r: _Run, scope: _Scope, node: Layer, x: Tensor) -> Tensor:
    kind, h = node.kind, hp_dict(node.hp)
    key = scope.prefix(scope.key(CLASS_KEY[kind])) if kind in CLASS_KEY else ""
    simple = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
              "silu": F.silu, "sine": torch.sin, "cosine": torch.cos, "negate": torch.neg,
              "square": torch.square, "absolute": torch.abs}
    if kind in simple:
        return simple[kind](x)
    if kind == "gelu":
        return F.gelu(x, approximate=h["approximate"])
    if kind == "leaky_relu":
        return torch.where(x >= 0, x, h["slope"] * x)
    if kind == "softplus":
        beta = h["beta"]
        return torch.where(beta * x > h["threshold"], x,
                           torch.log1p(torch.exp(beta * x)) / beta)
    if kind == "clamp":
        return torch.clamp(x, h["min"], h["max"])
    if kind == "softmax":
        return torch.softmax(x, h["axis"])
    if kind == "log_softmax":
        return torch.log_softmax(x, h["axis"])
    if kind == "layer_norm":
        n = h["n"] or 1
        dims = tuple(range(x.dim() - n, x.dim()))
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, correction=0, keepdim=True)
        y = (x - mean) / torch.sqrt(var + h["eps"])
        if h["affine"]:
            y = y * r.param(f"{key}.weight")
            if h["bias"]:
                y = y + r.param(f"{key}.bias")
        return y
    if kind == "reduce":
        fn = torch.mean if h["op"] == "mean" else torch.sum
        return fn(x, dim=h["axis"], keepdim=True)
    if kind == "linear":
        y = x @ r.param(f"{key}.weight").T
        return y + r.param(f"{key}.bias") if h["bias"] else y
    if kind == "mlp":
        # the reference's parameter names: weight{i} / bias{i} of layer i
        acts = {"relu": torch.relu, "tanh": torch.tanh, "none": lambda t: t}
        for i, act in enumerate(h["acts"]):
            x = acts[act](x @ r.param(f"{key}.weight{i}").T + r.param(f"{key}.bias{i}"))
        return x
    if kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if kind == "reshape":
        return x.reshape(x.shape[0], *h["to"])
    if kind in ("conv2d", "conv1d"):
        return _conv(r, key, x, h, 2 if kind == "conv2d" else 1)
    if kind == "batch_norm2d":
        return _batch_norm(r, key, x, h)
    if kind == "group_norm":
        g = h["groups"]
        y = F.group_norm(x, g, eps=1e-5)
        if h["affine"]:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = y * r.param(f"{key}.weight").reshape(shape) + \
                r.param(f"{key}.bias").reshape(shape)
        return y
    if kind in ("max_pool2d", "max_pool1d"):
        fn = F.max_pool2d if kind == "max_pool2d" else F.max_pool1d
        return fn(x, h["k"], stride=h["stride"] or h["k"], padding=h["padding"],
                  dilation=h["dilation"])
    if kind == "avg_pool2d":
        return F.avg_pool2d(x, h["k"], stride=h["stride"] or h["k"], padding=h["padding"],
                            count_include_pad=True)
    if kind == "adaptive_avg_pool2d":
        size = h["size"]
        return F.adaptive_avg_pool2d(x, (size, size) if isinstance(size, int) else size)
    if kind == "attention":
        return _attention(r, key, x, h)
    raise ValueError(f"no reference for layer kind {kind!r}")


def _algebra(kind: str, x: Tensor) -> Tensor:
    if kind == "affine":
        return x * 0.5 + 0.25
    if kind == "softsqrt":
        return torch.sqrt(x * x + 1.0)
    if kind == "logexp":
        return torch.log(torch.exp(torch.tanh(x)) + 1.0)
    if kind == "center":
        return x - x.mean(-1, keepdim=True)
    if kind in ("normalize", "normalize_raw"):
        y = torch.tanh(x) if kind == "normalize" else x
        return y / ((y * y).sum(-1, keepdim=True) + 1.0)
    if kind == "slice":
        return x[:, 1:]
    if kind == "swap":
        return x.transpose(-1, -2)
    if kind == "unsqueeze":
        return x[:, None]
    if kind == "flatten_by_shape":
        return x.reshape(x.shape[0], -1)
    raise ValueError(f"no reference for algebra kind {kind!r}")


def _items(r: _Run, scope: _Scope, items: tuple[Any, ...], x: Tensor) -> Tensor:
    for node in items:
        x = _node(r, scope, node, x)
    return x


def _block(r: _Run, scope: _Scope, block: Block, x: Tensor) -> Tensor:
    if not block.nested:
        return _items(r, scope, block.items, x)
    local = block.name if block.name is not None else scope.key("model")  # named: no number
    return _items(r, _Scope((*scope.path, local)), block.items, x)


def _node(r: _Run, scope: _Scope, node: Any, x: Tensor) -> Tensor:
    if isinstance(node, Layer):
        return _layer(r, scope, node, x)
    if isinstance(node, Algebra):
        return _algebra(node.kind, x)
    if isinstance(node, Expose):
        r.exposed[node.name] = x
        return x
    if isinstance(node, AuxInput):
        aux = r.data[".".join((*scope.path, node.name))]
        return x + aux if node.op == "add" else x * aux
    if isinstance(node, Residual):
        return _block(r, scope, node.body, x) + x
    if isinstance(node, Branch):
        left = _block(r, scope, node.left, x)
        right = _block(r, scope, node.right, x)
        if node.merge == "concat":
            return torch.cat([left, right], dim=node.axis)
        return {"add": torch.add, "subtract": torch.sub, "multiply": torch.mul}[node.merge](
            left, right)
    if isinstance(node, Block):
        return _block(r, scope, node, x)
    raise TypeError(f"unknown spec node {node!r}")


def evaluate_spec(spec: Spec, built: Built, inputs: Inputs, gradients: bool | None = None
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                             dict[str, np.ndarray], set[str]]:
    """Outputs, gradients, new state and the parameter keys used.

    Gradients are computed for training specs, or when ``gradients`` is true (the derivative
    of an inference model's outputs, for finite differences).
    """
    if gradients is None:
        gradients = not spec.inference
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=gradients)
              for k, v in inputs.params.items()}
    data = {k: torch.tensor(v, dtype=torch.float64) for k, v in inputs.data.items()}
    state = {k: torch.tensor(v, dtype=torch.float64) for k, v in inputs.state.items()}
    r = _Run(params, data, state, spec.inference)
    x = params[spec.input_name] if spec.input_trainable else data[spec.input_name]
    if spec.input_trainable:
        r.used.add(spec.input_name)
    y = _items(r, _Scope(()), spec.body.items, x)
    # the final value's key (unless the last node exposed it under its own name)
    finals = [k for k in built.output_shapes if k not in r.exposed]
    assert len(finals) <= 1, (finals, list(r.exposed))
    outs = {**r.exposed, **{k: y for k in finals}}
    grads: dict[str, np.ndarray] = {}
    if gradients:
        objective = sum((torch.from_numpy(inputs.output_gradients[k]) * v).sum()
                        for k, v in outs.items())
        leaves = [k for k in params if params[k].requires_grad]
        found = () if not leaves else \
            torch.autograd.grad(objective, [params[k] for k in leaves], allow_unused=True)
        grads = {k: (np.zeros(params[k].shape) if g is None else g.detach().numpy())
                 for k, g in zip(leaves, found, strict=True)}
    return ({k: v.detach().numpy() for k, v in outs.items()}, grads,
            {k: v.detach().numpy() for k, v in r.new_state.items()}, r.used)


def check_against_torch(spec: Spec, backend_name: str = "numpy") -> None:
    """Compile ``spec`` on ``backend_name`` (float64) and compare its outputs, gradients and new
    state with :func:`evaluate_spec`; the compiled model's parameter keys must be the ones the
    reference derived."""
    from tests.model_generator import (
        _close,
        build,
        compile_spec,
        make_backend,
        make_inputs,
        run,
    )

    built = build(spec)
    pm = compile_spec(spec, built, make_backend(backend_name))
    inputs = make_inputs(spec, built, pm)
    out, grads, state = run(pm, inputs)
    want_out, want_grads, want_state, used = evaluate_spec(spec, build(spec), inputs)
    assert used == set(inputs.params), ("parameter keys", sorted(used), sorted(inputs.params))
    assert set(out) == set(want_out), (sorted(out), sorted(want_out))
    for k in want_out:
        _close(out[k], want_out[k], f"output {k!r} against PyTorch")
    assert set(grads) == set(want_grads)
    for k in want_grads:
        _close(grads[k], want_grads[k], f"gradient of {k!r} against PyTorch", rtol=1e-5)
    assert set(state) == set(want_state), (sorted(state), sorted(want_state))
    for k in want_state:
        _close(state[k], want_state[k], f"state {k!r} against PyTorch")
