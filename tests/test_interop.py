"""fastdl.interop: PyTorch modules both ways, safetensors files, ONNX export. Each converter's outputs are compared
with fastdl's own; the tests skip cleanly where the optional package is missing. The numpy backend runs them (the
conversion is the point, not the kernels), plus one round trip on each other backend."""

import numpy as np
import pytest

import fastdl
from fastdl.interop import from_torch, load_safetensors, save_safetensors, to_onnx, to_torch


@pytest.fixture
def reference():
    with fastdl.use_backend("numpy") as backend:
        yield backend


# every activation with a PyTorch module, with constants where it has them
ACTIVATIONS = [("relu", {}), ("sigmoid", {}), ("tanh", {}), ("softsign", {}), ("silu", {}), ("elu", {"alpha": 0.7}),
               ("leaky_relu", {"alpha": 0.2}), ("rrelu", {}), ("softplus", {"beta": 2.0, "threshold": 3.0}),
               ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("softmax", {})]
IDS = [name + ("_tanh" if constants.get("approximate") else "") for name, constants in ACTIVATIONS]


def model(dtype=np.float32, activation=("relu", {}), dropout=0.0, first="gelu"):
    name, constants = activation
    return fastdl.Sequential(
        fastdl.Dense(5, 8, activation=first, seed=1, dtype=dtype),
        fastdl.BatchNorm(8, activation="tanh", dtype=dtype),
        fastdl.Sequential(fastdl.Dense(8, 6, seed=2, dtype=dtype, dropout=dropout), fastdl.PReLU(6, dtype=dtype)),
        fastdl.BatchNorm(6, affine=False, momentum=None, dtype=dtype),
        fastdl.Dense(6, 4, seed=3, dtype=dtype, bias=False),
        fastdl.Activation(name, **constants))


def batch(dtype=np.float32, rows=16, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, 5)).astype(dtype)


def trained(dtype=np.float32, **options):
    """A model whose batch norms have running statistics of their own (two training forwards)."""
    net = model(dtype, **options)
    net(fastdl.asarray(batch(dtype, seed=1)))
    net(fastdl.asarray(batch(dtype, seed=2)))
    return net


TOLERANCE = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def torch_output(torch_model, x):
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        return torch_model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=IDS)
def test_to_torch_computes_the_same_outputs_in_eval(reference, activation):
    pytest.importorskip("torch")
    net = trained(activation=activation)
    net.eval()
    x = batch(seed=3)
    np.testing.assert_allclose(torch_output(to_torch(net), x), net(x), **TOLERANCE[np.float32])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_a_round_trip_through_pytorch_keeps_outputs_statistics_and_mode(reference, dtype):
    torch = pytest.importorskip("torch")
    net = trained(dtype)
    converted = to_torch(net)
    assert converted.training and converted[0].weight.dtype == getattr(torch, np.dtype(dtype).name)
    assert converted[2].num_batches_tracked.shape == () and int(converted[2].num_batches_tracked) == 2
    x = batch(dtype, seed=3)
    # training mode: batch norms normalize with the batch's statistics and update their running ones, both sides
    np.testing.assert_allclose(torch_output(converted, x), net(x), **TOLERANCE[dtype])
    back = from_torch(converted)
    assert [type(layer).__name__ for layer in back.layers] == ["Dense", "BatchNorm", "Dense", "PReLU", "BatchNorm",
                                                               "Dense"]
    assert [back[0].activation.name, back[1].activation.name, back[5].activation.name] == ["gelu", "tanh", "relu"]
    ours, theirs = net.state_dict(), back.state_dict()  # the same values in the same order (the names nest)
    assert len(ours) == len(theirs)
    for (name, a), b in zip(ours.items(), theirs.values()):
        np.testing.assert_array_equal(fastdl.to_numpy(a), fastdl.to_numpy(b), err_msg=name)
    net.eval()
    back.eval()
    np.testing.assert_array_equal(back(x), net(x))


def test_from_torch_fuses_activations_and_dropout_and_flattens(reference):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(5, 7), nn.LeakyReLU(0.3), nn.Dropout(0.1),
                           nn.Sequential(nn.BatchNorm1d(7), nn.ELU(0.5), nn.Identity()), nn.Linear(7, 3, bias=False),
                           nn.Softmax(dim=1)).eval()
    converted = from_torch(source)
    assert repr(converted.layers[0]) == ("Dense(5, 7, activation='leaky_relu', alpha=0.3, bias=True, dropout=0.1)")
    assert [type(layer).__name__ for layer in converted.layers] == ["Dense", "BatchNorm", "Dense", "Activation"]
    assert not converted.layers[0].training
    x = batch(seed=4)
    np.testing.assert_allclose(converted(x), torch_output(source, x), **TOLERANCE[np.float32])


def test_from_torch_names_a_module_it_cannot_convert(reference):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    with pytest.raises(ValueError, match=r"from_torch: module 1 \(Hardswish\) has no fastdl equivalent; supported: "
                                         r"Linear, BatchNorm1d"):
        from_torch(nn.Sequential(nn.Linear(3, 3), nn.Hardswish()))
    with pytest.raises(TypeError, match="from_torch: parameters must be float32 or float64, got float16"):
        from_torch(nn.Sequential(nn.Linear(3, 3).half()))


def test_to_torch_names_a_layer_pytorch_has_no_module_for(reference):
    with pytest.raises(ValueError, match=r"Dense\(3->3, sqnl\): the activation 'sqnl' has no PyTorch module"):
        fastdl.interop.layout.torch_layout(fastdl.Sequential(fastdl.Dense(3, 3, activation="sqnl")))
    with pytest.raises(ValueError, match=r"APL\(3, hinges=2\): APL has no PyTorch module"):
        fastdl.interop.layout.torch_layout(fastdl.APL(3, hinges=2))


@pytest.mark.parametrize("backend_name", ["cpu", "cuda-emulator"])
def test_the_round_trip_on_the_compiled_backends(backend_name):
    pytest.importorskip("torch")
    with fastdl.use_backend(backend_name):  # ReLU only: kernels the rest of the suite compiles anyway
        net = fastdl.Sequential(fastdl.Dense(5, 8, activation="relu", seed=1), fastdl.BatchNorm(8, activation="relu"),
                                fastdl.Dense(8, 4, seed=3))
        net(fastdl.asarray(batch(seed=1)))
        net.eval()
        x = fastdl.asarray(batch(seed=3))
        back = from_torch(to_torch(net))
        back.eval()
        np.testing.assert_array_equal(fastdl.to_numpy(back(x)), fastdl.to_numpy(net(x)))


def test_safetensors_files_carry_pytorchs_names_and_load_both_ways(reference, tmp_path):
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file
    from safetensors.torch import load_file as load_torch_file
    from safetensors.torch import save_file

    net = trained()
    path = save_safetensors(net, tmp_path / "model.safetensors")
    tensors = load_file(path)
    assert sorted(tensors) == sorted(to_torch(net).state_dict())
    assert tensors["0.weight"].shape == (8, 5) and tensors["2.num_batches_tracked"].shape == ()
    converted = to_torch(net)
    converted.load_state_dict(load_torch_file(path))
    fresh = model()
    load_safetensors(fresh, path)
    net.eval()
    fresh.eval()
    x = batch(seed=3)
    np.testing.assert_array_equal(fresh(x), net(x))
    # a file PyTorch wrote for the same architecture
    with torch.no_grad():
        for parameter in converted.parameters():
            parameter.mul_(0.5)
    save_file(converted.state_dict(), tmp_path / "torch.safetensors")
    load_safetensors(fresh, tmp_path / "torch.safetensors")
    np.testing.assert_allclose(fresh(x), torch_output(converted.eval(), x), **TOLERANCE[np.float32])


def test_a_safetensors_file_that_does_not_fit_changes_nothing(reference, tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file, save_file

    net = trained()
    path = save_safetensors(net, tmp_path / "model.safetensors")
    tensors = load_file(path)
    tensors["0.weight"] = tensors["0.weight"][:, :4].copy()
    del tensors["4.bias"]
    tensors["extra"] = np.zeros(2, np.float32)
    save_file(tensors, tmp_path / "bad.safetensors")
    target = model()
    before = {name: fastdl.to_numpy(value).copy() for name, value in target.state_dict().items()}
    with pytest.raises(ValueError, match=r"does not fit the model: missing 4\.bias; unexpected extra; 0\.weight has "
                                         r"shape \(8, 4\), the model needs \(8, 5\)"):
        load_safetensors(target, tmp_path / "bad.safetensors")
    for name, value in target.state_dict().items():
        np.testing.assert_array_equal(fastdl.to_numpy(value), before[name], err_msg=name)


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=IDS)
def test_onnx_export_matches_fastdls_inference_outputs_at_any_batch_size(reference, activation, tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    net = trained(activation=activation, dropout=0.3)
    net.eval()
    session = onnxruntime.InferenceSession(str(to_onnx(net, tmp_path / "model.onnx")))
    for rows in (1, 16, 37):
        x = batch(rows=rows, seed=rows)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], net(x), rtol=1e-5, atol=1e-6)


def test_onnx_export_in_float64_and_its_refusals(reference, tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    net = trained(np.float64, first="silu")  # (onnxruntime has no float64 Erf for GELU)
    net.eval()
    session = onnxruntime.InferenceSession(str(to_onnx(net, tmp_path / "model.onnx")))
    x = batch(np.float64, seed=5)
    # onnxruntime's own float64 sigmoid and tanh differ from numpy's by a few 1e-12
    np.testing.assert_allclose(session.run(None, {"x": x})[0], net(x), rtol=1e-10, atol=1e-11)
    with pytest.raises(ValueError, match=r"BatchNorm\(3\): without running statistics batch norm has no inference"):
        to_onnx(fastdl.Sequential(fastdl.Dense(2, 3), fastdl.BatchNorm(3, track_running_stats=False)), tmp_path / "b")
    with pytest.raises(ValueError, match="to_onnx: the model must start with a Dense layer"):
        to_onnx(fastdl.Sequential(fastdl.Activation("relu")), tmp_path / "c")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
