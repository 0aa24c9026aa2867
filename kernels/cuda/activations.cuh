// Every element-wise activation of kernels/reference/activations.py and its derivative, by integer code, with the
// same formulas and branches as kernels/cpu/activations.py (PyTorch's conventions at the kinks). p0 and p1 are
// the activation's constants; (seed, counter, index) draw RReLU's slope with the shared counter generator;
// column picks BReLU's flipped (odd) columns. Softmax (code 17) is row-wise: see activations.cu.
#pragma once
#include "common.cuh"

// The codes FASTDL_IDENTITY ... FASTDL_SOFTMAX are definitions from kernels/reference/activations.py, given to the
// compiler by kernels/cuda/sources.py (as are the block shapes of common.cuh and the kernels).
#ifndef FASTDL_SOFTMAX
#error "compile with the definitions of kernels/cuda/sources.py"
#endif

template <typename T> __device__ __forceinline__ T fastdl_sigmoid(T z) {
    if (z >= T(0)) return T(1) / (T(1) + exp(-z));
    T e = exp(z);
    return e / (T(1) + e);
}

template <typename T> __device__ __forceinline__ T fastdl_softplus(T z) {
    return max(z, T(0)) + log1p(exp(-fabs(z)));
}

// The forms below hold over the whole finite range (kernels/reference/activations.py says why each is needed).
// Soft clipping below z = 1/2; above, f(z) = 1 - f(1 - z).
template <typename T> __device__ __forceinline__ T fastdl_soft_clipping_lower_half(T w, T p0) {
    return (fastdl_softplus(p0 * w) - fastdl_softplus(p0 * (w - T(1)))) / p0;
}

// tanh-GELU's u = sqrt(2/pi) (z + 0.044715 z^3) and u', z capped at 1e4 (z^3 would overflow; past it f is 0 or z).
template <typename T> __device__ __forceinline__ T fastdl_capped(T z) { return min(max(z, T(-1e4)), T(1e4)); }
template <typename T> __device__ __forceinline__ T fastdl_gelu_inner(T c) {
    return T(0.7978845608028654) * (c + T(0.044715) * c * c * c);
}
template <typename T> __device__ __forceinline__ T fastdl_gelu_slope(T c) {
    return T(0.7978845608028654) * (T(1) + T(3.0 * 0.044715) * c * c);
}

template <typename T> __device__ __forceinline__ T fastdl_rrelu_slope(T p0, T p1, u64 seed, u64 counter, u64 index) {
    return p0 + (p1 - p0) * T(fastdl_uniform(seed, counter, index));
}

template <typename T>
__device__ __forceinline__ T fastdl_activate(int code, T z, T p0, T p1, u64 seed, u64 counter, u64 index,
                                             long long column) {
    switch (code) {
        case FASTDL_BINARY_STEP: return z >= T(0) ? T(1) : T(0);
        case FASTDL_SIGMOID: return fastdl_sigmoid(z);
        case FASTDL_TANH: return tanh(z);
        case FASTDL_SOFTSIGN: return z / (T(1) + fabs(z));
        case FASTDL_SQNL:
            if (z > T(2)) return T(1);
            if (z >= T(0)) return z - z * z * T(0.25);
            if (z >= T(-2)) return z + z * z * T(0.25);
            return T(-1);
        case FASTDL_RELU: return z > T(0) ? z : T(0);
        case FASTDL_BRELU:
            if (column % 2 == 1) return z < T(0) ? z : T(0);
            return z > T(0) ? z : T(0);
        case FASTDL_LEAKY_RELU: return z > T(0) ? z : p0 * z;
        case FASTDL_RRELU: return z >= T(0) ? z : fastdl_rrelu_slope(p0, p1, seed, counter, index) * z;
        case FASTDL_ELU: return z > T(0) ? z : p0 * expm1(z);
        case FASTDL_BENT_IDENTITY: return z * (z / (hypot(z, T(1)) + T(1))) * T(0.5) + z;
        case FASTDL_SILU: return z * fastdl_sigmoid(z);
        case FASTDL_SOFT_CLIPPING:
            return z > T(0.5) ? T(1) - fastdl_soft_clipping_lower_half(T(1) - z, p0)
                              : fastdl_soft_clipping_lower_half(z, p0);
        case FASTDL_GELU: return T(0.5) * z * erfc(z * T(-0.7071067811865476));
        case FASTDL_GELU_TANH: return z * fastdl_sigmoid(T(2) * fastdl_gelu_inner(fastdl_capped(z)));
        case FASTDL_SOFTPLUS: return p0 * z > p1 ? z : fastdl_softplus(p0 * z) / p0;
        default: return z;  // identity
    }
}

// Only sigmoid's, tanh's and ELU's derivatives read the activation's output: for every other code the load of y
// is skipped (a third of an activation-grad pass's traffic).
template <typename T> __device__ __forceinline__ T fastdl_output_if_read(int code, const T* y, long long i) {
    return (code == FASTDL_SIGMOID || code == FASTDL_TANH || code == FASTDL_ELU) ? y[i] : T(0);
}

template <typename T>
__device__ __forceinline__ T fastdl_derivative(int code, T z, T y, T p0, T p1, u64 seed, u64 counter, u64 index,
                                               long long column) {
    switch (code) {
        case FASTDL_BINARY_STEP: return T(0);
        case FASTDL_SIGMOID: return y * (T(1) - y);
        case FASTDL_TANH: return T(1) - y * y;
        case FASTDL_SOFTSIGN: {
            T d = T(1) + fabs(z);
            return T(1) / (d * d);
        }
        case FASTDL_SQNL:
            if (z > T(2) || z < T(-2)) return T(0);
            if (z >= T(0)) return T(1) - z * T(0.5);
            return T(1) + z * T(0.5);
        case FASTDL_RELU: return z > T(0) ? T(1) : T(0);
        case FASTDL_BRELU:
            if (column % 2 == 1) return z < T(0) ? T(1) : T(0);
            return z > T(0) ? T(1) : T(0);
        case FASTDL_LEAKY_RELU: return z > T(0) ? T(1) : p0;
        case FASTDL_RRELU: return z >= T(0) ? T(1) : fastdl_rrelu_slope(p0, p1, seed, counter, index);
        case FASTDL_ELU: return z > T(0) ? T(1) : y + p0;
        case FASTDL_BENT_IDENTITY: return z / hypot(z, T(1)) * T(0.5) + T(1);
        case FASTDL_SILU: return fastdl_sigmoid(z) * (T(1) + z * fastdl_sigmoid(-z));
        case FASTDL_SOFT_CLIPPING: {
            T w = z > T(0.5) ? T(1) - z : z;  // f'(z) = f'(1 - z)
            return fastdl_sigmoid(p0 * w) - fastdl_sigmoid(p0 * (w - T(1)));
        }
        case FASTDL_GELU: {
            T cdf = T(0.5) * erfc(z * T(-0.7071067811865476));
            return cdf + z * exp(T(-0.5) * z * z) * T(0.3989422804014327);
        }
        case FASTDL_GELU_TANH: {
            T c = fastdl_capped(z), u = fastdl_gelu_inner(c);
            T s = fastdl_sigmoid(T(2) * u);
            return s + z * (T(2) * s * fastdl_sigmoid(T(-2) * u) * fastdl_gelu_slope(c));  // z last: no inf * 0
        }
        case FASTDL_SOFTPLUS: return p0 * z > p1 ? T(1) : fastdl_sigmoid(p0 * z);
        default: return T(1);  // identity
    }
}
