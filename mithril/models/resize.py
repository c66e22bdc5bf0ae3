"""``Upsample`` / ``Interpolate``: PyTorch's ``nn.Upsample`` and ``F.interpolate`` (modes
``nearest``, ``linear`` and ``bilinear``) from catalogue primitives.

Each resized axis is one matrix product with an interpolation matrix ``(out, in)``: one-hot
rows for ``nearest`` (the source index of each output position), two weights per row for
``linear`` / ``bilinear``. The matrices are computed from the input's size by primitives
(``arange``, ``floor``, ``one_hot``), which compile to constants once the sizes are known, so
the layer differentiates on every backend and exports to ONNX as plain ``MatMul`` nodes.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError
from ..framework.logical.model import Connection, IOKey, Model
from ._build import add_op as _add

_MODES = {"nearest": None, "linear": 1, "bilinear": 2}


def _as_tuple(value: Any, n: int, what: str, kind: type | tuple[type, ...]) -> tuple[Any, ...]:
    items = tuple(value) if isinstance(value, tuple | list) else (value,) * n
    if len(items) != n or not all(isinstance(v, kind) and not isinstance(v, bool) and v > 0
                                  for v in items):
        raise ArgumentError(f"Upsample: {what} must be a positive number or a tuple of {n}, "
                            f"got {value!r}")
    return items


class Upsample(Model):
    """``nn.Upsample(size=None, scale_factor=None, mode="nearest", align_corners=None)``:
    resize the trailing spatial dims of an ``(N, C, *spatial)`` input.

    Give ``size`` (the output's spatial size) or ``scale_factor`` (the output size is
    ``floor(input_size * scale_factor)``, and, as in PyTorch, the source positions use
    ``1 / scale_factor``). Modes: ``"nearest"`` (PyTorch's legacy nearest, index
    ``floor(dst * scale)``), ``"linear"`` (one spatial dim) and ``"bilinear"`` (two), with
    ``align_corners`` (default ``False``) as in PyTorch. The number of spatial dims is the
    length of a tuple ``size`` / ``scale_factor``, else 1 for ``"linear"`` and 2 otherwise
    (``spatial_dims=`` overrides). ``recompute_scale_factor=True`` uses the output size's ratio
    instead of ``scale_factor``.

    The same numbers as ``torch.nn.functional.interpolate`` (float64 to rounding), with
    gradients on every backend. Nearest with a non-integer ``scale_factor`` computes its source
    index in the backend's float type, where PyTorch uses float32: an index exactly on an
    integer may differ.

    >>> import mithril as ml
    >>> from mithril.models import Model, Upsample
    >>> model = Model()
    >>> model |= Upsample(scale_factor=2, mode="bilinear")
    >>> backend = ml.NumpyBackend()
    >>> pm = ml.compile(model, backend, shapes={"input": [1, 1, 2, 2]})
    >>> x = backend.array([[[[0.0, 1.0], [2.0, 3.0]]]])
    >>> out = pm.evaluate({}, {"input": x})["output"]
    >>> out.shape, [float(v) for v in out[0, 0, 0]]
    ((1, 1, 4, 4), [0.0, 0.25, 0.75, 1.0])
    """

    def __init__(self, size: int | tuple[int, ...] | None = None,
                 scale_factor: float | tuple[float, ...] | None = None, mode: str = "nearest",
                 align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                 *, spatial_dims: int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        if mode not in _MODES:
            raise ArgumentError(f"Upsample: mode must be one of {sorted(_MODES)}, got {mode!r} "
                                "(bicubic, trilinear, area and nearest-exact are not supported)")
        if (size is None) == (scale_factor is None):
            raise ArgumentError("Upsample: give exactly one of size and scale_factor")
        if align_corners is not None and mode == "nearest":
            raise ArgumentError("Upsample: align_corners only applies to linear and bilinear "
                                "modes (as in PyTorch)")
        given = size if size is not None else scale_factor
        nd = spatial_dims or (len(given) if isinstance(given, tuple | list) else None) \
            or _MODES[mode] or 2
        if _MODES[mode] is not None and _MODES[mode] != nd:
            raise ArgumentError(f"Upsample: mode {mode!r} resizes {_MODES[mode]} spatial dim(s), "
                                f"got {nd}")
        sizes = _as_tuple(size, nd, "size", int) if size is not None else (None,) * nd
        scales = (_as_tuple(scale_factor, nd, "scale_factor", (int, float))
                  if scale_factor is not None else (None,) * nd)
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners = bool(align_corners)
        x = _add(self, "buffer", input=IOKey("input", type=float,
                                               shape=[None, None, *([None] * nd)]))
        dtype = _add(self, "dtype_of", input=x)
        out = x
        for i in range(nd):
            axis = i - nd
            n_in = x.shape[axis]
            sf = None if recompute_scale_factor else scales[i]
            matrix = _matrix(self, n_in, sizes[i], scales[i], sf, mode, self.align_corners,
                             dtype)
            # resize axis ``axis``: (..., in) @ (in, out) for the last, (out, in) @ (..., in, W)
            # for the one before, else move it last and back
            if axis == -1:
                out = out @ matrix.T
            elif axis == -2:
                out = matrix @ out
            else:
                out = (out.swapaxes(axis, -1) @ matrix.T).swapaxes(axis, -1)
        _add(self, "buffer", out=IOKey("output"), input=out)
        self.set_cin("input")
        self.set_cout("output")


Interpolate = Upsample
"""``F.interpolate(input, size, scale_factor, mode, align_corners)`` as a layer: the same
model as :class:`Upsample`."""


def _matrix(model: Model, n_in: Connection, size: int | None, scale: float | None,
            sf: float | None, mode: str, align_corners: bool, dtype: Connection) -> Connection:
    """The ``(out, in)`` interpolation matrix of one axis."""
    integer_scale = scale is not None and float(scale).is_integer()
    if size is not None:
        n_out: Any = size
    elif integer_scale:
        n_out = n_in * int(scale)
    else:
        n_out = (n_in * float(scale)) // 1
    dst = _add(model, "arange", stop=n_out)
    if mode == "nearest":
        if sf is None:
            # floor(dst * in / out) in integers: exact
            idx = (dst.cast("int32") * n_in) // n_out
        elif integer_scale:
            idx = dst.cast("int32") // int(sf)
        else:
            pos = _add(model, "cast", input=dst, dtype=dtype) * (1.0 / float(sf))
            idx = _add(model, "floor", input=pos).cast("int32")
            idx = _add(model, "minimum", left=idx, right=n_in - 1)
        return _add(model, "cast", input=_add(model, "one_hot", input=idx, num_classes=n_in),
                    dtype=dtype)
    pos = _add(model, "cast", input=dst, dtype=dtype)
    if align_corners:
        src = pos * ((n_in - 1) / (n_out - 1))
    else:
        ratio = (1.0 / float(sf)) if sf is not None else n_in / n_out
        src = _add(model, "clamp", input=(pos + 0.5) * ratio - 0.5, min=0.0)
    lo = _add(model, "floor", input=src)
    frac = src - lo
    i0 = lo.cast("int32")
    i1 = _add(model, "minimum", left=i0 + 1, right=n_in - 1)
    w0 = _add(model, "cast", input=_add(model, "one_hot", input=i0, num_classes=n_in),
              dtype=dtype)
    w1 = _add(model, "cast", input=_add(model, "one_hot", input=i1, num_classes=n_in),
              dtype=dtype)
    return w0 * (1.0 - frac)[:, None] + w1 * frac[:, None]


__all__ = ["Interpolate", "Upsample"]
