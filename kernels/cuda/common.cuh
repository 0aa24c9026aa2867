// Shared device code for fastdl's CUDA kernels: the counter-based generator (bit for bit the CPU's
// SplitMix64 mix of seed, counter and element index, so a seed gives the same dropout mask on both backends)
// and a deterministic block reduction (fixed tree order: results never depend on scheduling, no atomics).
#pragma once

typedef unsigned long long u64;

__device__ __forceinline__ double fastdl_uniform(u64 seed, u64 counter, u64 index) {
    u64 x = seed * 0x9E3779B97F4A7C15ULL + counter * 0xD1B54A32D192ED03ULL + index;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    x = x ^ (x >> 31);
    return (double)(x >> 40) * (1.0 / 16777216.0);  // 24 random bits, as on the CPU
}

// 32 random bits for stochastic rounding: Wellons' lowbias32 hash of a 32-bit key (kernels/bfloat16.py).
__device__ __forceinline__ unsigned int fastdl_rounding_bits(unsigned int key) {
    key ^= key >> 16;
    key *= 0x21F0AAADu;
    key ^= key >> 15;
    key *= 0xD35A2D97u;
    return key ^ (key >> 15);
}
// bfloat16 kept as its bits (unsigned short): the top half of a float32 (kernels/bfloat16.py says why and how).
__device__ __forceinline__ float fastdl_bfloat16_to_float(unsigned short bits) {
    return __uint_as_float((unsigned int)bits << 16);
}

// Stochastic rounding: the low 16 bits plus a uniform 16-bit number carry into the kept half with probability
// low / 65536, so the stored value is unbiased. NaN and Inf are truncated (NaN kept a NaN).
__device__ __forceinline__ unsigned short fastdl_float_to_bfloat16(float value, unsigned int random16) {
    unsigned int bits = __float_as_uint(value);
    if ((bits & 0x7F800000u) == 0x7F800000u) return (unsigned short)((bits >> 16) | ((bits & 0x007FFFFFu) ? 0x40u : 0u));
    return (unsigned short)((bits + random16) >> 16);
}

// Rounding to the nearest bfloat16 (ties to even), kept as a float: a Dense layer's GEMM operands in bfloat16
// compute (kernels/bfloat16.py round_nearest). Inf stays Inf, NaN stays a NaN.
__device__ __forceinline__ float fastdl_round_to_bfloat16(float value) {
    unsigned int bits = __float_as_uint(value);
    if ((bits & 0x7F800000u) == 0x7F800000u) {  // Inf kept; a NaN keeps a mantissa bit in the kept half
        return __uint_as_float((bits & 0xFFFF0000u) | ((bits & 0x007FFFFFu) ? 0x00400000u : 0u));
    }
    return __uint_as_float((bits + 0x7FFFu + ((bits >> 16) & 1u)) & 0xFFFF0000u);
}

// Sum of one value per thread over a block of FASTDL_BLOCK threads (a definition from kernels/cuda/sources.py), in
// a fixed order; valid in thread 0.
#ifndef FASTDL_BLOCK
#error "compile with the definitions of kernels/cuda/sources.py"
#endif
__device__ __forceinline__ double fastdl_block_sum(double value, double* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int stride = FASTDL_BLOCK / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
        __syncthreads();
    }
    return shared[0];
}

__device__ __forceinline__ double fastdl_infinity() { return __longlong_as_double(0x7ff0000000000000LL); }
__device__ __forceinline__ double fastdl_quiet_nan() { return __longlong_as_double(0x7ff8000000000000LL); }

// Warp-shuffle reductions, then one value per warp combined by warp 0: a fixed tree, so a fixed result. Every
// thread of the (1-D, whole-warp) block must call them; the result is returned to all threads. ``shared`` holds
// 32 values and may be reused right after the call.
struct FastdlAdd {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct FastdlMax {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a > b ? a : b; }
};

template <typename T, typename Op> __device__ __forceinline__ T fastdl_warp_reduce(T value, Op op) {
    for (int offset = 16; offset > 0; offset >>= 1) value = op(value, __shfl_down_sync(0xffffffffu, value, offset));
    return value;
}

template <typename T, typename Op>
__device__ __forceinline__ T fastdl_block_reduce(T value, T identity, T* shared, Op op) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
    value = fastdl_warp_reduce(value, op);
    if (lane == 0) shared[warp] = value;
    __syncthreads();
    if (warp == 0) {
        value = fastdl_warp_reduce(lane < warps ? shared[lane] : identity, op);
        if (lane == 0) shared[0] = value;
    }
    __syncthreads();
    value = shared[0];
    __syncthreads();
    return value;
}

template <typename T> __device__ __forceinline__ T fastdl_sign(T p) { return (T)((p > T(0)) - (p < T(0))); }
