"""The CUDA emulator itself: barriers, warp shuffles, deadlocks and argument checks behave as on a GPU, so the
"cuda-emulator" backend's results (the whole backend suite runs on it) say something about the GPU's."""

import numpy as np
import pytest

from fastdl.kernels.cuda import emulator

pytestmark = pytest.mark.skipif(not __import__("shutil").which("g++"), reason="the CUDA emulator needs g++")

SOURCE = r"""
#include "common.cuh"
// thread t writes t + 1, thread 0 reads what the last thread wrote: right only after a barrier
extern "C" __global__ void last_value(int* out) {
    __shared__ int shared[1024];
    shared[threadIdx.x] = threadIdx.x + 1;
    __syncthreads();
    if (threadIdx.x == 0) out[blockIdx.x] = shared[blockDim.x - 1];
}
extern "C" __global__ void last_value_without_barrier(int* out) {
    __shared__ int shared[1024];
    shared[threadIdx.x] = threadIdx.x + 1;
    if (threadIdx.x == 0) out[blockIdx.x] = shared[blockDim.x - 1];
}
extern "C" __global__ void butterfly_sum(const double* x, double* out) {
    double v = x[threadIdx.x];
    for (int mask = 16; mask > 0; mask >>= 1) v += __shfl_xor_sync(0xffffffffu, v, mask);
    out[threadIdx.x] = v;  // every lane holds its warp's sum
}
extern "C" __global__ void block_sum(const double* x, long long n, double* out) {
    __shared__ double shared[32];
    double v = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) v += x[i];
    out[threadIdx.x] = fastdl_block_reduce(v, 0.0, shared, FastdlAdd());
}
extern "C" __global__ void deadlock(int* out) {
    if (threadIdx.x == 0) __syncthreads();  // the others return, then thread 0 waits... and on a GPU proceeds
    if (threadIdx.x == 1) { __syncwarp(); }
    out[0] = 1;
}
extern "C" __global__ void scalar(float* out, float value, long long n) { out[0] = value + (float)n; }
"""


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    path = tmp_path_factory.mktemp("cuda") / "emulator_test.cu"
    path.write_text(SOURCE)
    return emulator.module(str(path))


def test_a_missing_barrier_shows(kernels):
    out = np.zeros(3, np.int32)
    kernels.get_function("last_value")((3,), (64,), (out,))
    np.testing.assert_array_equal(out, 64)
    kernels.get_function("last_value_without_barrier")((3,), (64,), (out,))
    # thread 0 runs before the last thread writes: the first block reads the never-written value (later blocks
    # read what the block before left in shared memory, as stale as on a GPU)
    assert out[0] == 0


def test_warp_shuffles_exchange_within_each_warp(kernels):
    x = np.arange(96, dtype=np.float64)
    out = np.zeros(96)
    kernels.get_function("butterfly_sum")((1,), (96,), (x, out))
    np.testing.assert_array_equal(out, np.repeat(x.reshape(3, 32).sum(axis=1), 32))


@pytest.mark.parametrize("threads, n", [(32, 5), (256, 1000), (96, 97)])
def test_block_reduce_gives_the_sum_to_every_thread(kernels, threads, n):
    x = np.random.default_rng(n).standard_normal(n)
    out = np.zeros(threads)
    kernels.get_function("block_sum")((1,), (threads,), (x, np.int64(n), out))
    np.testing.assert_allclose(out, x.sum(), rtol=1e-12)
    assert len(set(out.tolist())) == 1


def test_a_barrier_only_some_threads_reach_is_a_deadlock_error(kernels):
    with pytest.raises(emulator.EmulationError, match="deadlock"):
        kernels.get_function("deadlock")((1,), (64,), (np.zeros(1, np.int32),))


def test_arguments_are_checked_against_the_kernel(kernels):
    scalar = kernels.get_function("scalar")
    out = np.zeros(1, np.float32)
    scalar((1,), (32,), (out, np.float32(1.5), np.int64(2)))
    assert out[0] == 3.5
    with pytest.raises(emulator.EmulationError, match="argument 1 must be a float32 scalar, got float"):
        scalar((1,), (32,), (out, 1.5, np.int64(2)))
    with pytest.raises(emulator.EmulationError, match="argument 0 must hold float32, got float64"):
        scalar((1,), (32,), (np.zeros(1), np.float32(1.5), np.int64(2)))
    with pytest.raises(emulator.EmulationError, match="takes 3 arguments"):
        scalar((1,), (32,), (out, np.float32(1.5)))
    with pytest.raises(emulator.EmulationError, match="C-contiguous"):
        scalar((1,), (32,), (np.zeros(4, np.float32)[::2], np.float32(1.5), np.int64(2)))
    with pytest.raises(emulator.EmulationError, match="no kernel named"):
        kernels.get_function("missing")


@pytest.mark.parametrize("grid, block, shared, message", [
    ((1, 65536), (32,), 0, r"grid y dimension 65536 is outside \[1, 65535\]"),
    ((1, 1, 65536), (32,), 0, r"grid z dimension 65536 is outside"),
    ((2**31,), (32,), 0, r"grid x dimension 2147483648 is outside"),
    ((0,), (32,), 0, r"grid x dimension 0 is outside"),
    ((1,), (1025,), 0, r"block x dimension 1025 is outside"),
    ((1,), (1, 1, 65), 0, r"block z dimension 65 is outside"),
    ((1,), (64, 32), 0, r"block \(64, 32, 1\) has more than 1024 threads"),
    ((1,), (32,), 48 * 1024 + 1, r"49153 bytes of dynamic shared memory"),
])
def test_launches_a_device_refuses_are_refused(kernels, grid, block, shared, message):
    """The emulator holds every launch to the device's limits: a grid past 65,535 blocks in y failed only on a GPU."""
    with pytest.raises(emulator.EmulationError, match=message):
        kernels.get_function("scalar")(grid, block, (np.zeros(1, np.float32), np.float32(1.5), np.int64(2)),
                                       shared_mem=shared)


def test_row_chunks_never_ask_for_more_blocks_in_y_than_a_device_has():
    from fastdl.kernels.cuda.launch import MAX_GRID_Y, row_chunks

    for rows in [0, 1, 64, 65535 * 64, 65535 * 64 + 1, 16_776_961, 10**9, 2**40]:
        per_chunk, chunks = row_chunks(rows, 64)
        assert 1 <= chunks <= MAX_GRID_Y and per_chunk >= 64 and per_chunk * chunks >= rows


def test_batches_past_the_grid_limit_stride_over_chunks_and_match_the_reference(monkeypatch):
    """With the limit lowered to 4 blocks in y (on both sides), a dense backward and a batch norm forward and
    backward over 2,051 rows need 33 and 9 chunks: they take 4 larger ones and give the reference's results."""
    import fastdl
    from fastdl.kernels.cuda import launch

    monkeypatch.setattr(emulator, "MAX_GRID", (2**31 - 1, 4, 4))
    monkeypatch.setattr(launch, "MAX_GRID_Y", 4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2051, 3))
    grad = rng.standard_normal((2051, 3))
    results = {}
    for backend in ("numpy", "cuda-emulator"):
        with fastdl.use_backend(backend):
            dense = fastdl.Dense(3, 3, activation="tanh", seed=1, dtype="float64")
            norm = fastdl.BatchNorm(3, activation="relu", dtype="float64")
            model = fastdl.Sequential(dense, norm)
            y = model(fastdl.asarray(x))
            grad_x = model.backward(fastdl.asarray(grad))
            results[backend] = [fastdl.to_numpy(a).copy() for a in (y, grad_x, dense.weight.grad, dense.bias.grad,
                                                                     norm.weight.grad, norm.running_var)]
    for actual, expected in zip(results["cuda-emulator"], results["numpy"]):
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(launch, "MAX_GRID_Y", 65535)  # chunks sized for a larger device: the emulator refuses
    with fastdl.use_backend("cuda-emulator"), pytest.raises(emulator.EmulationError, match="grid y dimension 33"):
        layer = fastdl.Dense(3, 3, activation="tanh", dtype="float64")
        layer(fastdl.asarray(x))
        layer.backward(fastdl.asarray(grad))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset, sizes, packed", [(0, (36, 11), True), (1, (36, 11), False), (0, (37, 10), False)],
                         ids=["aligned", "unaligned-arrays", "unaligned-piece"])
def test_adam_packed_and_scalar_paths_match_the_reference(dtype, offset, sizes, packed):
    """Aligned arrays whose pieces all start on a pack take the 16-byte-pack kernel (with a tail of each piece's
    length % pack elements done one by one); an offset view, or a piece starting off a pack, the scalar one. Two
    parameter groups, so each piece must read its own group's row."""
    from fastdl.kernels import reference
    from fastdl.kernels.cuda import optim as cuda_optim
    from fastdl.optim.flat import piece_table

    n = sum(sizes)
    rng = np.random.default_rng(3)
    base = [rng.standard_normal(n + 4).astype(dtype) for _ in range(3)] + [rng.random(n + 4).astype(dtype)]
    assert all(a.ctypes.data % 16 == 0 for a in base)
    emulated = [a.copy()[offset: offset + n] for a in base]
    expected = [a[offset: offset + n].copy() for a in base]
    piece_bounds, piece_segments = piece_table(sizes)
    piece_groups = piece_segments.copy()  # one group per tensor
    assert cuda_optim._packable(emulated, piece_bounds, np.dtype(dtype).itemsize) == packed
    hyper = np.array([[0.01, 0.001, 0.999, 0.9, 0.999, 0.01, 0.3, 1e-8],
                      [0.0, 0.0, 1.0, 0.8, 0.99, 0.05, 0.2, 1e-6]])
    param, grad, exp_avg, exp_avg_sq = emulated
    grouped = (dtype(0.7), hyper, piece_bounds, piece_groups)
    cuda_optim.adam_step(param, grad, exp_avg, exp_avg_sq, None, *grouped)
    reference.optim.adam_step(*expected[:4], None, *grouped)
    for actual, want in zip(emulated, expected):
        np.testing.assert_allclose(actual, want, rtol=2e-6 if dtype == np.float32 else 1e-14, atol=1e-7)
