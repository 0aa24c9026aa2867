"""Other libraries' tensors (anything with ``__dlpack__``) go straight into fastdl: layers read them in place where
the memory is on the backend's device, and name the layer and argument when it is not."""

import numpy as np
import pytest

import fastdl

torch = pytest.importorskip("torch")


def test_a_layer_reads_a_torch_tensor_in_place_forward_and_backward(backend):
    if backend.name == "gpu":
        pytest.skip("CPU tensors on the GPU backend: a device mismatch (tested below on the host backends)")
    model = fastdl.Sequential(fastdl.Dense(4, 6, activation="relu", seed=0), fastdl.BatchNorm(6),
                              fastdl.Dense(6, 3, seed=1))
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    y = model(x)
    assert isinstance(y, backend.array_type)
    assert np.shares_memory(model[0]._forward_input, x.numpy())  # no copy of the input
    reference = fastdl.Sequential(fastdl.Dense(4, 6, activation="relu", seed=0), fastdl.BatchNorm(6),
                                  fastdl.Dense(6, 3, seed=1))
    np.testing.assert_array_equal(fastdl.to_numpy(y), fastdl.to_numpy(reference(fastdl.asarray(x.numpy()))))
    grad = torch.ones(8, 3)
    model.backward(grad)
    reference.backward(fastdl.asarray(grad.numpy()))
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(fastdl.to_numpy(ours.grad), fastdl.to_numpy(theirs.grad))


def test_asarray_shares_a_host_tensors_memory():
    with fastdl.use_backend("cpu"):
        x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        array = fastdl.asarray(x)
        assert isinstance(array, np.ndarray) and np.shares_memory(array, x.numpy())


def test_a_tensor_the_backend_cannot_read_is_a_clear_error_naming_the_layer():
    with fastdl.use_backend("cpu"):
        layer = fastdl.Dense(4, 3, seed=0)
        with pytest.raises(TypeError, match=r"Dense\(4->3, identity\): x is a torch\.Tensor on meta, which the 'cpu' "
                                            r"backend cannot use in place"):
            layer(torch.empty(5, 4, device="meta"))
        with pytest.raises(TypeError, match=r"x is a torch\.Tensor on cpu, .*tensors that require gradient"):
            layer(torch.ones(5, 4, requires_grad=True))
        layer(np.ones((5, 4), np.float32))
        with pytest.raises(TypeError, match=r"Dense\(4->3, identity\): grad_out is a torch\.Tensor on meta"):
            layer.backward(torch.empty(5, 3, device="meta"))


def test_an_array_of_the_other_backend_is_refused_by_name_not_taken_through_dlpack():
    """CuPy arrays have __dlpack__ too: on a host backend they get the backends' own refusal (never a silent copy)."""
    class FakeCupyArray:
        __module__ = "cupy._core.core"
        shape, ndim, dtype = (5, 4), 2, np.dtype(np.float32)

        def __dlpack__(self, **options):
            raise AssertionError("a CuPy array must not be read through DLPack")

    with fastdl.use_backend("cpu"):
        with pytest.raises(TypeError, match=r"Dense\(4->3, identity\): x must be a numpy array for the 'cpu' backend, "
                                            r"got cupy\._core\.core\.FakeCupyArray \(move it with fastdl\.asarray\)"):
            fastdl.Dense(4, 3, seed=0)(FakeCupyArray())
