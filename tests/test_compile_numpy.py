"""compile() with the NumPy backend: outputs, gradients and state match PyTorch autograd."""

import numpy as np
import pytest
import torch

import mithril as ml
from mithril import CompileError, InputError, IOKey, ShapeMismatchError, TypeMismatchError
from mithril.models import BatchNorm2d, Linear, Model, Relu
from tests.guide_models import create_conv_net
from tests.torch_reference import CONVNET_NAMES, TorchConvNet, load_into


@pytest.fixture
def backend():
    b = ml.NumpyBackend(dtype=ml.float64)
    b.set_seed(0)
    return b


def _torch_grads(params, x, grad_out, backend, train=True):
    net = TorchConvNet().double()
    load_into(net, params, CONVNET_NAMES, backend.to_numpy)
    net.train(train)
    xt = torch.from_numpy(backend.to_numpy(x))
    out = net(xt)
    out.backward(torch.from_numpy(grad_out))
    grads = {k: dict(net.named_parameters())[t].grad.numpy() for k, t in CONVNET_NAMES.items()}
    return out.detach().numpy(), grads, net


@pytest.mark.parametrize("with_shapes", [True, False])
def test_convnet_outputs_and_gradients_match_pytorch(backend, with_shapes):
    shapes = {"input": [32, 3, 32, 32]} if with_shapes else None
    pm = ml.compile(create_conv_net(), backend, shapes=shapes)
    params = pm.randomize_params()
    x = backend.randn(32, 3, 32, 32)
    out = pm.evaluate(params, {"input": x})
    assert out["output"].shape == (32, 10)
    grad_out = np.random.default_rng(1).standard_normal((32, 10))
    pm.state = pm.initial_state_dict
    outputs, grads = pm.evaluate(params, {"input": x}, output_gradients={"output": grad_out})
    ref_out, ref_grads, _ = _torch_grads(params, x, grad_out, backend)
    np.testing.assert_allclose(outputs["output"], ref_out, rtol=1e-5, atol=1e-8)
    assert set(grads) == set(params)
    for key in params:
        np.testing.assert_allclose(grads[key], ref_grads[key], rtol=1e-5, atol=1e-8,
                                   err_msg=key)


def test_compile_without_shapes_accepts_any_batch(backend):
    pm = ml.compile(create_conv_net(), backend)
    params = pm.randomize_params()
    for n in (1, 5, 17):
        assert pm.evaluate(params, {"input": backend.randn(n, 3, 32, 32)})["output"].shape == \
            (n, 10)


def test_batchnorm_state_is_kept_updated_and_matches_pytorch(backend):
    pm = ml.compile(create_conv_net(), backend, shapes={"input": [8, 3, 32, 32]})
    params = pm.randomize_params()
    net = TorchConvNet().double()
    load_into(net, params, CONVNET_NAMES, backend.to_numpy)
    net.train()
    for _ in range(5):
        x = backend.randn(8, 3, 32, 32)
        pm.evaluate(params, {"input": x})  # keeps and updates its own state
        net(torch.from_numpy(x))
    np.testing.assert_allclose(pm.state["batchnorm2d.running_mean"],
                               net.bn1.running_mean.numpy(), rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(pm.state["batchnorm2d_1.running_var"],
                               net.bn2.running_var.numpy(), rtol=1e-6, atol=1e-10)
    # explicit state: functional, the kept state is untouched
    kept = {k: v.copy() for k, v in pm.state.items()}
    _, new_state = pm.evaluate(params, {"input": x}, state=pm.initial_state_dict)
    assert set(new_state) == set(pm.state_keys)
    for k in kept:
        np.testing.assert_array_equal(pm.state[k], kept[k])
    # inference uses the running statistics, like net.eval()
    pi = ml.compile(create_conv_net(), backend, shapes={"input": [8, 3, 32, 32]},
                    inference=True)
    pi.state = pm.state
    net.eval()
    np.testing.assert_allclose(pi.evaluate(params, {"input": x})["output"],
                               net(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-9)
    with pytest.raises(CompileError, match="inference=True"):
        pi.evaluate(params, {"input": x}, output_gradients={"output": np.ones((8, 10))})


def test_parameter_keys_are_hierarchical_and_stable(backend):
    pm = ml.compile(create_conv_net(), backend)
    assert pm.param_keys == list(CONVNET_NAMES)
    assert pm.state_keys == ["batchnorm2d.running_mean", "batchnorm2d.running_var",
                             "batchnorm2d_1.running_mean", "batchnorm2d_1.running_var"]
    outer = Model()
    outer |= create_conv_net()(input="x", output="y")
    assert "model.linear.weight" in ml.compile(outer, backend).param_keys


def test_randomize_params_uses_pytorch_initialisers(backend):
    pm = ml.compile(create_conv_net(), backend)
    params = pm.randomize_params()
    w = params["linear.weight"]
    bound = 1 / np.sqrt(2048)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    np.testing.assert_array_equal(params["batchnorm2d.weight"], np.ones(16))
    np.testing.assert_array_equal(params["batchnorm2d.bias"], np.zeros(16))
    backend.set_seed(3)
    a = pm.randomize_params()
    backend.set_seed(3)
    b = pm.randomize_params()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def _assert_code_is_inert(code: str, kernels: set[str]) -> None:
    """No imports; calls only to kernels, VJPs and a few builtins; strings only as keys."""
    import ast

    tree = ast.parse(code)
    allowed = kernels | {f"{k}_vjp" for k in kernels} | {f"{k}_fwd" for k in kernels} | {
        "tuple", "slice", "float", "zeros_like", "split_rng"}
    key_strings = set()
    for node in ast.walk(tree):
        assert not isinstance(node, ast.Import | ast.ImportFrom | ast.Global | ast.Lambda)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name) and node.func.id in allowed, ast.dump(node)
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key_strings.add(id(node.slice))
        if isinstance(node, ast.Dict):
            key_strings.update(id(k) for k in node.keys)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert id(node) in key_strings or node.value.startswith("Generated by Mithril"), \
                node.value


HOSTILE = ["x; import os", "__import__('os').system('echo hacked')", "a'b\"c", "def", "1x",
           "x\ny = 1", "params", "relu"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_cannot_inject_code(backend, name, tmp_path):
    m = Model()
    m |= Linear(3)(input=name, output=IOKey("out", expose=True))
    m += Relu()(output=IOKey(name + "!"))
    path = tmp_path / "gen.py"
    pm = ml.compile(m, backend, shapes={name: [2, 4]}, file_path=str(path))
    _assert_code_is_inert(pm.code, set(backend.kernel_table()))
    assert path.read_text() == pm.code
    params = pm.randomize_params()
    out = pm.evaluate(params, {name: backend.ones(2, 4)})
    assert set(out) == {"out", name + "!"}
    np.testing.assert_allclose(out[name + "!"], np.maximum(out["out"], 0))


def test_file_path_writes_the_running_code(backend, tmp_path):
    path = tmp_path / "sub" / "convnet.py"
    pm = ml.compile(create_conv_net(), backend, file_path=str(path))
    assert path.read_text() == pm.code
    assert "def forward(params, data, state, rng):" in pm.code
    assert "def backward(cache, output_gradients, params):" in pm.code
    assert "conv2d_output = conv2d(input, conv2d_weight" in pm.code


def test_inference_has_no_gradient_code(backend):
    pm = ml.compile(create_conv_net(), backend, inference=True)
    assert "backward" not in pm.code and "batch_norm_inference" in pm.code


def test_evaluate_errors_are_clear(backend):
    pm = ml.compile(create_conv_net(), backend, shapes={"input": ["N", 3, 32, 32]})
    params = pm.randomize_params()
    x = backend.randn(2, 3, 32, 32)
    with pytest.raises(InputError, match=r"missing \['input'\]"):
        pm.evaluate(params, {})
    with pytest.raises(InputError, match=r"unknown \['inptu'\]"):
        pm.evaluate(params, {"input": x, "inptu": x})
    bad = dict(params)
    del bad["linear.bias"]
    with pytest.raises(InputError, match=r"params: missing \['linear.bias'\]"):
        pm.evaluate(bad, {"input": x})
    bad = dict(params, **{"linear.bias": np.zeros(11)})
    with pytest.raises(ShapeMismatchError, match=r"'linear.bias' has shape \[11\].*\[10\]"):
        pm.evaluate(bad, {"input": x})
    with pytest.raises(ShapeMismatchError, match=r"input 'input' has shape \[2, 3, 31, 32\]"):
        pm.evaluate(params, {"input": backend.randn(2, 3, 31, 32)})
    with pytest.raises(TypeMismatchError, match="float64"):
        pm.evaluate(params, {"input": x.astype(np.float32)})
    with pytest.raises(TypeMismatchError, match="list"):
        pm.evaluate(params, {"input": x.tolist()})


def test_symbols_must_agree_across_inputs(backend):
    m = Model()
    m |= Linear(3)(input="a", output="h")
    m |= Linear(3)(input="b", output="g")
    from mithril.models import Add

    m |= Add()(left="h", right="g", output="out")
    pm = ml.compile(m, backend, shapes={"a": ["N", 4], "b": ["N", 4]})
    params = pm.randomize_params()
    with pytest.raises(ShapeMismatchError, match="N"):
        pm.evaluate(params, {"a": backend.ones(2, 4), "b": backend.ones(3, 4)})


def test_compile_options(backend):
    m = Model()
    m |= Linear(3)(input="x", output=IOKey("h", expose=True))
    m |= Relu()(input="h", output="y")
    m |= Linear(2)(input="y", output="z")
    pm = ml.compile(m, backend, shapes={"x": [4, 5]}, discard_keys={"h"})
    assert pm.output_keys == ["z"]
    pm = ml.compile(m, backend, shapes={"x": [4, 5]}, constant_keys={"x": np.ones((4, 5))})
    assert "x" not in pm.data_keys
    out = pm.evaluate(pm.randomize_params(), {})
    assert out["z"].shape == (4, 2)
    pm = ml.compile(m, backend, shapes={"x": [4, 5]}, trainable_keys={"x"})
    assert "x" in pm.trainable_keys
    pm = ml.compile(m, backend, shapes={"x": [4, 5]}, data_keys={"linear.weight"})
    assert "linear.weight" in pm.data_keys
    with pytest.raises(CompileError, match="not an input"):
        ml.compile(m, backend, data_keys={"nope"})


def test_undeterminable_parameter_shape_is_a_compile_error(backend):
    m = Model()
    m |= Linear(3)
    with pytest.raises(CompileError, match="shape of parameter 'linear.weight'"):
        ml.compile(m, backend)


def test_cycles_are_a_compile_error(backend):
    m = Model()
    m |= Relu()(input="a", output="b")
    m |= Relu()(input="b", output="a")
    m |= Relu()(input="b", output=IOKey("out"))
    with pytest.raises(CompileError, match="cycle"):
        ml.compile(m, backend, shapes={"a": [2]})


def test_empty_model_is_a_compile_error(backend):
    with pytest.raises(CompileError, match="empty"):
        ml.compile(Model(), backend)


def test_compile_does_not_change_the_model(backend):
    m = create_conv_net()
    before = m.shapes
    ml.compile(m, backend, shapes={"input": [4, 3, 32, 32]})
    assert m.shapes == before


def test_output_gradients_for_some_outputs(backend):
    m = Model()
    m |= Linear(3)(input="x", output=IOKey("h", expose=True))
    m |= Linear(2)(input="h", output="z")
    pm = ml.compile(m, backend, shapes={"x": [4, 5]})
    params = pm.randomize_params()
    x = backend.randn(4, 5)
    _, g1 = pm.evaluate(params, {"x": x}, output_gradients={"z": np.ones((4, 2))})
    _, g2 = pm.evaluate(params, {"x": x}, output_gradients={"h": np.ones((4, 3))})
    np.testing.assert_array_equal(g2["linear_1.weight"], np.zeros((2, 3)))
    w2 = params["linear_1.weight"]
    np.testing.assert_allclose(g1["linear.bias"], 4 * w2.sum(0))
    np.testing.assert_allclose(g2["linear.bias"], np.full(3, 4.0))


def test_batchnorm_alone_in_training_and_inference(backend):
    m = Model()
    m |= BatchNorm2d(4, momentum=0.3)
    pm = ml.compile(m, backend)
    x = backend.randn(3, 4, 5, 5)
    out = pm.evaluate(pm.randomize_params(), {"input": x})["output"]
    bn = torch.nn.BatchNorm2d(4, momentum=0.3).double()
    np.testing.assert_allclose(out, bn(torch.from_numpy(x)).detach().numpy(), rtol=1e-6,
                               atol=1e-9)
