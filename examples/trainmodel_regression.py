"""Regression with ``TrainModel``: the loss, the regularisation and a metric live in the graph.

An MLP learns scikit-learn's Friedman #1 benchmark, ``y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2
+ 10 x4 + 5 x5 + noise`` with five more inputs that do not matter, which a linear model cannot
fit well. ``TrainModel`` wraps the network and adds

- a ``SquaredError`` loss reduced by ``Mean`` (PyTorch's ``MSELoss``),
- ``L2`` regularisation on every parameter whose key ends in ``weight``,
- a mean ``AbsoluteError`` metric, exposed as the output ``mae``;

their sum is the output ``final_cost``, and ``evaluate(..., output_gradients=True)`` returns
its gradients: the training loop needs no loss function of its own. The trained parameters then
run in a plain inference build of the network, since ``TrainModel`` keeps the parameter keys.

A second ``TrainModel`` around a fresh copy of the network swaps the loss for
``QuantileLoss(0.9)`` and learns the 90th percentile instead of the mean: about 90% of the test
targets should fall below its predictions.

    python examples/trainmodel_regression.py --backend torch
    python examples/trainmodel_regression.py --rows 20000 --steps 2000
    python examples/trainmodel_regression.py --backend mlx --small
"""

from __future__ import annotations

import re
import sys
import time

import numpy as np
from _common import example_parser, limit_threads, make_backend

import mithril as ml
from mithril.models import (
    L2,
    AbsoluteError,
    Linear,
    Mean,
    Model,
    QuantileLoss,
    Relu,
    SquaredError,
    TrainModel,
)


def load_data(rows: int, seed: int):
    """Standardised features and targets of Friedman #1, split 75/25."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=rows, noise=1.0, random_state=seed)
    x, y = x.astype(np.float32), y.astype(np.float32)[:, None]
    n_train = int(0.75 * len(x))
    x = (x - x[:n_train].mean(0)) / x[:n_train].std(0)
    y_mean, y_std = y[:n_train].mean(), y[:n_train].std()
    y = (y - y_mean) / y_std
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], float(y_std)


def create_mlp(n_features: int, hidden: int) -> Model:
    model = Model()
    model |= Linear(hidden)(input_size=n_features)
    model += Relu()
    model += Linear(hidden)
    model += Relu()
    model += Linear(1)
    return model


def wrap(network: Model, loss: Model, l2: float) -> TrainModel:
    train_model = TrainModel(network)
    train_model.add_loss(loss, input="output", target="target", reduce_steps=[Mean()])
    train_model.add_regularization(L2(), coef=l2, input=re.compile(r"weight$"))
    train_model.add_metric(AbsoluteError(), input="output", target="target",
                           reduce_steps=[Mean()], key_name="mae")
    return train_model


def fit(train_model: TrainModel, backend, data, args) -> dict:
    """Full-batch Adam on ``final_cost``; returns the trained parameters."""
    x_train, y_train = data
    compiled = ml.compile(train_model, backend)
    params = compiled.randomize_params(seed=args.seed)
    optimizer = ml.Adam(learning_rate=ml.CosineAnnealing(args.lr, total_steps=args.steps))
    optimizer_state = optimizer.init(params)
    feed = {"input": backend.array(x_train), "target": backend.array(y_train)}
    start = time.perf_counter()
    report_every = max(1, args.steps // 4)
    for step in range(1, args.steps + 1):
        outputs, gradients = compiled.evaluate(params, feed, output_gradients=True)
        params, optimizer_state = optimizer.update(params, gradients, optimizer_state)
        if step % report_every == 0 or step == args.steps:
            print(f"  step {step:5d}/{args.steps}: final_cost "
                  f"{float(backend.to_numpy(outputs['final_cost'])):.4f}, training mae "
                  f"{float(backend.to_numpy(outputs['mae'])):.4f} "
                  f"({time.perf_counter() - start:.1f}s)")
    return params


def main(argv: list[str] | None = None) -> int:
    parser = example_parser(__doc__)
    parser.add_argument("--rows", type=int, default=4000, help="data set size (default 4000)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    parser.add_argument("--steps", type=int, default=600, help="full-batch steps (600)")
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (5e-3)")
    parser.add_argument("--l2", type=float, default=1e-2, help="L2 coefficient (1e-2)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and parameters")
    parser.add_argument("--small", action="store_true",
                        help="a quick check: 400 rows, 40 steps")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    if args.small:
        args.rows, args.steps = 400, 40

    x_train, y_train, x_test, y_test, y_std = load_data(args.rows, args.seed)
    n_features = x_train.shape[1]
    print(f"Friedman #1: {len(x_train)} training and {len(x_test)} test rows, {n_features} "
          f"features; backend {args.backend}")
    backend = make_backend(args.backend)

    # ---- least squares, for comparison ----
    design = np.hstack([x_train, np.ones((len(x_train), 1), np.float32)])
    coef, *_ = np.linalg.lstsq(design, y_train, rcond=None)
    linear = np.hstack([x_test, np.ones((len(x_test), 1), np.float32)]) @ coef

    def r2(prediction: np.ndarray) -> float:
        return 1.0 - float(np.mean((prediction - y_test) ** 2) / np.var(y_test))

    # ---- the mean: squared error ----
    train_model = wrap(create_mlp(n_features, args.hidden), SquaredError(), args.l2)
    print(f"TrainModel outputs: {sorted(ml.compile(train_model, backend).output_keys)}")
    print("fitting the mean (SquaredError):")
    params = fit(train_model, backend, (x_train, y_train), args)
    predict = ml.compile(create_mlp(n_features, args.hidden), backend, inference=True)
    mean_prediction = backend.to_numpy(
        predict.evaluate(params, {"input": backend.array(x_test)})["output"])
    print(f"test R^2: MLP {r2(mean_prediction):.3f}, least squares {r2(linear):.3f}; test mean "
          f"absolute error {np.mean(np.abs(mean_prediction - y_test)) * y_std:.3f} "
          f"(least squares {np.mean(np.abs(linear - y_test)) * y_std:.3f}) in target units")

    # ---- the 90th percentile: swap the loss ----
    print("fitting the 90th percentile (QuantileLoss(0.9)):")
    quantile_model = wrap(create_mlp(n_features, args.hidden), QuantileLoss(0.9), args.l2)
    q_params = fit(quantile_model, backend, (x_train, y_train), args)
    upper = backend.to_numpy(
        predict.evaluate(q_params, {"input": backend.array(x_test)})["output"])
    print(f"test targets below the predicted 90th percentile: {np.mean(y_test < upper):.1%}; "
          f"below the predicted mean: {np.mean(y_test < mean_prediction):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
