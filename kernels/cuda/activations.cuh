// Every element-wise activation of kernels/activation_table.py and its derivative, by integer code, with the
// same formulas and branches as kernels/cpu/activations.py (PyTorch's conventions at the kinks). p0 and p1 are
// the activation's constants; (seed, counter, index) draw RReLU's slope with the shared counter generator;
// column picks BReLU's flipped (odd) columns. Softmax (code 17) is row-wise: see activations.cu.
#pragma once
#include "common.cuh"

enum {
    FASTDL_IDENTITY, FASTDL_BINARY_STEP, FASTDL_SIGMOID, FASTDL_TANH, FASTDL_SOFTSIGN, FASTDL_SQNL, FASTDL_RELU,
    FASTDL_BRELU, FASTDL_LEAKY_RELU, FASTDL_RRELU, FASTDL_ELU, FASTDL_BENT_IDENTITY, FASTDL_SILU,
    FASTDL_SOFT_CLIPPING, FASTDL_GELU, FASTDL_GELU_TANH, FASTDL_SOFTPLUS, FASTDL_SOFTMAX
};

template <typename T> __device__ __forceinline__ T fastdl_sigmoid(T z) {
    if (z >= T(0)) return T(1) / (T(1) + exp(-z));
    T e = exp(z);
    return e / (T(1) + e);
}

template <typename T> __device__ __forceinline__ T fastdl_softplus(T z) {
    return max(z, T(0)) + log1p(exp(-fabs(z)));
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
        case FASTDL_BENT_IDENTITY: return (sqrt(z * z + T(1)) - T(1)) * T(0.5) + z;
        case FASTDL_SILU: return z * fastdl_sigmoid(z);
        case FASTDL_SOFT_CLIPPING: return (fastdl_softplus(p0 * z) - fastdl_softplus(p0 * (z - T(1)))) / p0;
        case FASTDL_GELU: return T(0.5) * z * (T(1) + erf(z * T(0.7071067811865476)));
        case FASTDL_GELU_TANH:
            return T(0.5) * z * (T(1) + tanh(T(0.7978845608028654) * (z + T(0.044715) * z * z * z)));
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
        case FASTDL_BENT_IDENTITY: return z / (T(2) * sqrt(z * z + T(1))) + T(1);
        case FASTDL_SILU: {
            T s = fastdl_sigmoid(z);
            return s * (T(1) + z * (T(1) - s));
        }
        case FASTDL_SOFT_CLIPPING: return fastdl_sigmoid(p0 * z) - fastdl_sigmoid(p0 * (z - T(1)));
        case FASTDL_GELU: {
            T cdf = T(0.5) * (T(1) + erf(z * T(0.7071067811865476)));
            return cdf + z * exp(T(-0.5) * z * z) * T(0.3989422804014327);
        }
        case FASTDL_GELU_TANH: {
            T t = tanh(T(0.7978845608028654) * (z + T(0.044715) * z * z * z));
            T slope = T(0.7978845608028654) * (T(1) + T(3.0 * 0.044715) * z * z);
            return T(0.5) * (T(1) + t) + T(0.5) * z * (T(1) - t * t) * slope;
        }
        case FASTDL_SOFTPLUS: return p0 * z > p1 ? T(1) : fastdl_sigmoid(p0 * z);
        default: return T(1);  // identity
    }
}
