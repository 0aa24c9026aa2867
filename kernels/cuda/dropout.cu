// Inverted dropout with the counter-based generator of common.cuh: element k of call `counter` is kept when
// uniform(seed, counter, k) >= p, exactly as on the CPU, so one seed gives one mask on every backend.
// The mask is stored as bytes; the backward reuses it.
#include "common.cuh"

#define FASTDL_DROPOUT_KERNELS(T, S)                                                                                 \
    extern "C" __global__ void fastdl_dropout_forward_##S(const T* x, long long n, double p, T scale, u64 seed,       \
                                                          u64 counter, unsigned char* mask, T* y) {                  \
        for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;                                  \
             k += (long long)blockDim.x * gridDim.x) {                                                               \
            bool keep = fastdl_uniform(seed, counter, (u64)k) >= p;                                                  \
            mask[k] = keep;                                                                                          \
            y[k] = x[k] * (keep ? scale : T(0));                                                                       \
        }                                                                                                            \
    }                                                                                                                \
    extern "C" __global__ void fastdl_dropout_backward_##S(const T* grad_y, const unsigned char* mask, long long n,   \
                                                           T scale, T* grad_x) {                                     \
        for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;                                  \
             k += (long long)blockDim.x * gridDim.x) {                                                               \
            grad_x[k] = grad_y[k] * (mask[k] ? scale : T(0));                                                          \
        }                                                                                                            \
    }

FASTDL_DROPOUT_KERNELS(float, f32)
FASTDL_DROPOUT_KERNELS(double, f64)
