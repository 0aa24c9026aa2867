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

// Sum of one value per thread over a block of FASTDL_BLOCK threads, in a fixed order; valid in thread 0.
#define FASTDL_BLOCK 256
__device__ __forceinline__ double fastdl_block_sum(double value, double* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (int stride = FASTDL_BLOCK / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
        __syncthreads();
    }
    return shared[0];
}

template <typename T> __device__ __forceinline__ T fastdl_sign(T p) { return (T)((p > T(0)) - (p < T(0))); }
