"""Which shape of batch norm's normalize pass streams fastest on a GPU (float32, identity activation).

    python bench/gpu_batchnorm_variants.py      # needs CuPy and a device; prints us and GB/s per variant

fastdl's element-wise batch-norm passes reach about half of a copy's bandwidth on an H200 (see
bench/results/gpu-h200-targets.md). This times four shapes of the same pass next to a copy: float4 accesses over
columns in (32, 8) blocks, one row per block step with float4, and scalar (32, 8) blocks with float32 or float64
arithmetic, to tell the access pattern from the arithmetic before changing kernels/cuda/batchnorm.cu.
"""
import time, cupy, numpy as np
src = r'''
struct Col { double m, s, w, b; };
__device__ __forceinline__ Col col(const float* w, const float* b, const double* m, const double* s, long long c) {
    return Col{m[c], s[c], (double)w[c], (double)b[c]};
}
__device__ __forceinline__ float z64(Col k, float x) { return (float)(k.w * (((double)x - k.m) * k.s) + k.b); }
// B: float4 over columns, block (32, 8), 4 rows per thread
extern "C" __global__ void vec4(const float* x, const float* w, const float* b, const double* m, const double* s,
                                float* y, long long rows, long long cols) {
    long long c4 = blockIdx.x * 32LL + threadIdx.x;  // index of a float4 in the row
    if (c4 * 4 >= cols) return;
    Col k[4];
    for (int j = 0; j < 4; ++j) k[j] = col(w, b, m, s, c4 * 4 + j);
    for (long long base = blockIdx.y * 32LL + threadIdx.y; base < rows; base += 32LL * gridDim.y) {
        float4 v[4];
        for (int u = 0; u < 4; ++u) { long long r = base + 8 * u; if (r < rows) v[u] = ((const float4*)(x + r * cols))[c4]; }
        for (int u = 0; u < 4; ++u) {
            long long r = base + 8 * u; if (r >= rows) break;
            float4 o; o.x = z64(k[0], v[u].x); o.y = z64(k[1], v[u].y); o.z = z64(k[2], v[u].z); o.w = z64(k[3], v[u].w);
            ((float4*)(y + r * cols))[c4] = o;
        }
    }
}
// C: a block walks rows; its threads cover the row with float4 (cols/4 <= blockDim), 1 row per step, 4 rows unrolled
extern "C" __global__ void rowwise(const float* x, const float* w, const float* b, const double* m, const double* s,
                                   float* y, long long rows, long long cols) {
    long long c4 = threadIdx.x;
    if (c4 * 4 >= cols) return;
    Col k[4];
    for (int j = 0; j < 4; ++j) k[j] = col(w, b, m, s, c4 * 4 + j);
    for (long long base = blockIdx.x * 4LL; base < rows; base += 4LL * gridDim.x) {
        float4 v[4];
        for (int u = 0; u < 4; ++u) { long long r = base + u; if (r < rows) v[u] = ((const float4*)(x + r * cols))[c4]; }
        for (int u = 0; u < 4; ++u) {
            long long r = base + u; if (r >= rows) break;
            float4 o; o.x = z64(k[0], v[u].x); o.y = z64(k[1], v[u].y); o.z = z64(k[2], v[u].z); o.w = z64(k[3], v[u].w);
            ((float4*)(y + r * cols))[c4] = o;
        }
    }
}
// D: scalar, block (32, 8), 4 rows per thread, float math (is it compute?)
extern "C" __global__ void scalar32(const float* x, const float* w, const float* b, const double* m, const double* s,
                                    float* y, long long rows, long long cols) {
    long long c = blockIdx.x * 32LL + threadIdx.x;
    if (c >= cols) return;
    float mm = m[c], ss = s[c], ww = w[c], bb = b[c];
    for (long long base = blockIdx.y * 32LL + threadIdx.y; base < rows; base += 32LL * gridDim.y) {
        float v[4];
        for (int u = 0; u < 4; ++u) { long long r = base + 8 * u; if (r < rows) v[u] = x[r * cols + c]; }
        for (int u = 0; u < 4; ++u) { long long r = base + 8 * u; if (r >= rows) break; y[r * cols + c] = ww * ((v[u] - mm) * ss) + bb; }
    }
}
// E: same as D with double math (= fastdl's current shape without the activation switch)
extern "C" __global__ void scalar64(const float* x, const float* w, const float* b, const double* m, const double* s,
                                    float* y, long long rows, long long cols) {
    long long c = blockIdx.x * 32LL + threadIdx.x;
    if (c >= cols) return;
    Col k = col(w, b, m, s, c);
    for (long long base = blockIdx.y * 32LL + threadIdx.y; base < rows; base += 32LL * gridDim.y) {
        float v[4];
        for (int u = 0; u < 4; ++u) { long long r = base + 8 * u; if (r < rows) v[u] = x[r * cols + c]; }
        for (int u = 0; u < 4; ++u) { long long r = base + 8 * u; if (r >= rows) break; y[r * cols + c] = z64(k, v[u]); }
    }
}
'''
mod = cupy.RawModule(code=src)
def t(call, reps=20):
    call(); cupy.cuda.Device().synchronize(); best = 1e9
    for _ in range(5):
        s0 = time.perf_counter()
        for _ in range(reps): call()
        cupy.cuda.Device().synchronize(); best = min(best, (time.perf_counter() - s0) / reps)
    return best * 1e6
for rows, cols in [(65536, 1024), (262144, 256), (16384, 1024)]:
    rng = cupy.random.default_rng(0)
    x = rng.standard_normal((rows, cols), dtype=cupy.float32); y = cupy.empty_like(x)
    w = cupy.ones(cols, cupy.float32); b = cupy.zeros(cols, cupy.float32); m = cupy.zeros(cols); s = cupy.ones(cols)
    args = (x, w, b, m, s, y, np.int64(rows), np.int64(cols))
    mb = x.nbytes / 1e6
    res = {"copy": t(lambda: cupy.copyto(y, x))}
    res["vec4"] = t(lambda: mod.get_function("vec4")(((cols // 4 + 31) // 32, min((rows + 31) // 32, 65535)), (32, 8), args))
    res["rowwise"] = t(lambda: mod.get_function("rowwise")((min((rows + 3) // 4, 65535),), (cols // 4,), args))
    res["scalar32"] = t(lambda: mod.get_function("scalar32")(((cols + 31) // 32, min((rows + 31) // 32, 65535)), (32, 8), args))
    res["scalar64"] = t(lambda: mod.get_function("scalar64")(((cols + 31) // 32, min((rows + 31) // 32, 65535)), (32, 8), args))
    print(f"{rows}x{cols}: " + ", ".join(f"{k} {v:.0f} us ({2 * mb / 1e3 / (v / 1e6):.0f} GB/s)" for k, v in res.items()))
