"""The issue-17 layers survive ``to_dict`` / ``from_dict``: ceil-mode pooling (a composite with
wired scalar terminals), ConvTranspose2d, Upsample, MultiheadAttention with masks and
weights, Embedding(max_norm); the rebuilt model computes the same outputs."""

from __future__ import annotations

import json

import numpy as np

import mithril as ml
from mithril.models import (
    AvgPool2d,
    ConvTranspose2d,
    Embedding,
    MaxPool2d,
    Model,
    MultiheadAttention,
    Upsample,
)


def _again(model: Model) -> Model:
    return Model.from_dict(json.loads(json.dumps(model.to_dict())))


def _same(model: Model, shapes: dict, feed: dict, backend) -> None:
    first = ml.compile(model, backend, shapes=shapes, inference=True)
    second = ml.compile(_again(model), backend, shapes=shapes, inference=True)
    params = first.randomize_params(seed=0)
    assert sorted(params) == sorted(second.randomize_params())
    a, b = first.evaluate(params, feed), second.evaluate(params, feed)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def test_image_layers_round_trip() -> None:
    backend = ml.NumpyBackend(dtype=ml.float64)
    model = Model()
    model |= MaxPool2d(2, ceil_mode=True)
    model += AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
    model += ConvTranspose2d(3, 2, 3, stride=2, output_padding=1)
    model += Upsample(scale_factor=2, mode="bilinear")
    _same(model, {"input": [1, 3, 7, 9]}, {"input": backend.randn(1, 3, 7, 9)}, backend)


def test_attention_and_embedding_round_trip() -> None:
    backend = ml.NumpyBackend(dtype=ml.float64)
    model = Model()
    model |= Embedding(6, 8, max_norm=1.0)(input="ids", output="x")
    model |= MultiheadAttention(8, 2, attn_mask="bool", need_weights=True)(
        query="x", key="x", value="x", attn_mask="mask", output="output", attn_weights="w")
    mask = np.triu(np.ones((4, 4), bool), 1)
    ids = np.array([[0, 3, 5, 1], [2, 2, 4, 0]])
    _same(model, {"ids": [2, 4]}, {"ids": backend.array(ids), "mask": backend.array(mask)},
          backend)
