"""The layers built from primitives for issue 17 (Upsample, ceil-mode pooling,
MultiheadAttention with masks and weights) export to ONNX: onnxruntime gives the NumPy
backend's outputs, which the parity tests check against torch.nn. (Every parity case,
ConvTranspose1d/2d included, is also exported by tests/test_onnx_export.py.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mithril.models as mm
from mithril.models import IOKey, Model
from tests.onnx_harness import roundtrip


def _layer(make: Callable[[], Any]) -> Callable[[], Model]:
    def build() -> Model:
        model = Model()
        model |= make()
        return model
    return build


def _images(shape: tuple[int, ...]) -> Callable[[int], dict[str, np.ndarray]]:
    return lambda n: {"input": np.random.default_rng(n).standard_normal((n, *shape[1:]))}


LAYERS: dict[str, tuple[Callable[[], Any], tuple[int, ...]]] = {
    "upsample_nearest": (lambda: mm.Upsample(scale_factor=2), (2, 3, 4, 5)),
    "upsample_bilinear_size": (lambda: mm.Upsample(size=(7, 3), mode="bilinear"), (2, 2, 4, 5)),
    "upsample_bilinear_align": (lambda: mm.Upsample(scale_factor=1.5, mode="bilinear",
                                                    align_corners=True), (2, 2, 4, 5)),
    "maxpool_ceil": (lambda: mm.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 3, 6, 7)),
    "avgpool_ceil_exclude": (lambda: mm.AvgPool2d(3, 2, 1, ceil_mode=True,
                                                  count_include_pad=False), (2, 3, 6, 7)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_exports(name: str, tmp_path: Path) -> None:
    make, shape = LAYERS[name]
    roundtrip(_layer(make), {"input": list(shape)}, _images(shape), [shape[0]], str(tmp_path))


def test_attention_with_masks_exports(tmp_path: Path) -> None:
    def build() -> Model:
        model = Model()
        model |= mm.MultiheadAttention(8, 2, attn_mask="float", key_padding_mask="bool",
                                       need_weights=True)(
            query="x", key="x", value="x", attn_mask="mask", key_padding_mask="pad",
            output=IOKey("output"), attn_weights=IOKey("weights"))
        return model

    def draw(n: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(n)
        pad = np.zeros((n, 5), bool)
        pad[-1, 3:] = True
        return {"x": rng.standard_normal((n, 5, 8)), "mask": rng.standard_normal((5, 5)),
                "pad": pad}

    roundtrip(build, {"x": [2, 5, 8], "mask": [5, 5], "pad": [2, 5]}, draw, [2], str(tmp_path))
