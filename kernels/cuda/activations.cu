// Activations and the dense layer's epilogues. The GEMMs run in cuBLAS; these kernels do everything after
// them in one pass each:
//   forward:  z += bias; a = act(z); optionally inverted dropout y = a * mask / (1 - p)      (bias_activation)
//   backward: grad_z = act'(z) * grad_a (grad_a = grad_y, or masked and scaled by dropout), written once, and
//             the bias gradient's column sums as per-chunk partials in float64 (activation_grad_partials),
//             then one thread per column adds its chunks in order (column_sums): no atomics, fixed order.
// Softmax is row-wise: one block per row (softmax_rows, softmax_backward_rows).
#include "activations.cuh"

#define FASTDL_GRID_STRIDE(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)blockDim.x * gridDim.x)

template <typename T>
__device__ void bias_activation(T* z, const T* bias, T* a, unsigned char* mask, T* y, long long n, long long cols,
                                int code, T p0, T p1, u64 seed, u64 counter, double p, T scale, u64 dropout_seed) {
    FASTDL_GRID_STRIDE(i, n) {
        long long column = i % cols;
        T value = z[i];
        if (bias != nullptr) {
            value += bias[column];
            z[i] = value;
        }
        T activated = fastdl_activate(code, value, p0, p1, seed, counter, (u64)i, column);
        a[i] = activated;
        if (mask != nullptr) {
            bool keep = fastdl_uniform(dropout_seed, counter, (u64)i) >= p;
            mask[i] = keep;
            y[i] = activated * (keep ? scale : T(0));
        }
    }
}

template <typename T>
__device__ void activation_backward(const T* grad_y, const T* z, const T* y, T* grad_z, long long n, long long cols,
                                    int code, T p0, T p1, u64 seed, u64 counter) {
    FASTDL_GRID_STRIDE(i, n) {
        grad_z[i] = grad_y[i] * fastdl_derivative(code, z[i], fastdl_output_if_read(code, y, i), p0, p1, seed,
                                                     counter, (u64)i, i % cols);
    }
}

// Block (32, 8) over 32 columns; blockIdx.y is a chunk of rows_per_chunk rows. code < 0: grad_y already is
// grad_z (softmax's backward ran first), only the sums are taken.
template <typename T>
__device__ void activation_grad_partials(const T* grad_y, const T* z, const T* y, const unsigned char* mask, T scale,
                                         T* grad_z, double* partials, long long rows, long long cols,
                                         long long rows_per_chunk, int code, T p0, T p1, u64 seed, u64 counter) {
    __shared__ double shared[FASTDL_COLUMN_BLOCK_Y][FASTDL_COLUMN_BLOCK_X];
    long long column = blockIdx.x * (long long)FASTDL_COLUMN_BLOCK_X + threadIdx.x;
    long long first = blockIdx.y * rows_per_chunk, last = min(rows, first + rows_per_chunk);
    double sum = 0.0;
    if (column < cols) {
        for (long long row = first + threadIdx.y; row < last; row += FASTDL_COLUMN_BLOCK_Y) {
            long long i = row * cols + column;
            T g = grad_y[i];
            if (code >= 0) {
                if (mask != nullptr) g *= mask[i] ? scale : T(0);
                g *= fastdl_derivative(code, z[i], fastdl_output_if_read(code, y, i), p0, p1, seed, counter, (u64)i,
                                       column);
                grad_z[i] = g;
            }
            sum += (double)g;
        }
    }
    shared[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && column < cols && partials != nullptr) {
        double total = 0.0;
        for (int k = 0; k < FASTDL_COLUMN_BLOCK_Y; ++k) total += shared[k][threadIdx.x];
        partials[blockIdx.y * cols + column] = total;
    }
}

template <typename T>
__device__ void column_sums(const double* partials, long long chunks, long long cols, T* out, int accumulate) {
    FASTDL_GRID_STRIDE(column, cols) {
        double total = 0.0;
        for (long long k = 0; k < chunks; ++k) total += partials[k * cols + column];
        out[column] = accumulate ? T(out[column] + T(total)) : T(total);
    }
}

template <typename T> __device__ void softmax_rows(T* z, const T* bias, T* y, long long cols) {
    __shared__ double shared[32];
    long long base = blockIdx.x * cols;
    double largest = -fastdl_infinity();
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        T value = z[base + j];
        if (bias != nullptr) {
            value += bias[j];
            z[base + j] = value;
        }
        largest = max(largest, (double)value);
    }
    T row_max = T(fastdl_block_reduce(largest, -fastdl_infinity(), shared, FastdlMax()));
    double total = 0.0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
        T e = exp(z[base + j] - row_max);
        y[base + j] = e;
        total += (double)e;
    }
    T inverse = T(1.0 / fastdl_block_reduce(total, 0.0, shared, FastdlAdd()));
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) y[base + j] *= inverse;
}

template <typename T> __device__ void softmax_backward_rows(const T* grad_y, const T* y, T* grad_z, long long cols) {
    __shared__ double shared[32];
    long long base = blockIdx.x * cols;
    double dot = 0.0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) dot += (double)grad_y[base + j] * (double)y[base + j];
    T total = T(fastdl_block_reduce(dot, 0.0, shared, FastdlAdd()));
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) grad_z[base + j] = y[base + j] * (grad_y[base + j] - total);
}

template <typename T> __device__ void count_nonfinite(const T* x, long long n, double* partials) {
    __shared__ double shared[32];
    double count = 0.0;
    FASTDL_GRID_STRIDE(i, n) { count += isfinite(x[i]) ? 0.0 : 1.0; }
    count = fastdl_block_reduce(count, 0.0, shared, FastdlAdd());
    if (threadIdx.x == 0) partials[blockIdx.x] = count;
}

#define FASTDL_ACTIVATION_KERNELS(T, S)                                                                              \
    extern "C" __global__ void fastdl_bias_activation_##S(T* z, const T* bias, T* a, unsigned char* mask, T* y,       \
                                                          long long n, long long cols, int code, T p0, T p1,          \
                                                          u64 seed, u64 counter, double p, T scale,                  \
                                                          u64 dropout_seed) {                                        \
        bias_activation(z, bias, a, mask, y, n, cols, code, p0, p1, seed, counter, p, scale, dropout_seed);          \
    }                                                                                                                \
    extern "C" __global__ void fastdl_activation_backward_##S(const T* grad_y, const T* z, const T* y, T* grad_z,     \
                                                              long long n, long long cols, int code, T p0, T p1,      \
                                                              u64 seed, u64 counter) {                               \
        activation_backward(grad_y, z, y, grad_z, n, cols, code, p0, p1, seed, counter);                            \
    }                                                                                                                \
    extern "C" __global__ void fastdl_activation_grad_partials_##S(                                                  \
        const T* grad_y, const T* z, const T* y, const unsigned char* mask, T scale, T* grad_z, double* partials,    \
        long long rows, long long cols, long long rows_per_chunk, int code, T p0, T p1, u64 seed, u64 counter) {     \
        activation_grad_partials(grad_y, z, y, mask, scale, grad_z, partials, rows, cols, rows_per_chunk, code, p0,  \
                                 p1, seed, counter);                                                                 \
    }                                                                                                                \
    extern "C" __global__ void fastdl_column_sums_##S(const double* partials, long long chunks, long long cols,      \
                                                      T* out, int accumulate) {                                      \
        column_sums(partials, chunks, cols, out, accumulate);                                                        \
    }                                                                                                                \
    extern "C" __global__ void fastdl_softmax_rows_##S(T* z, const T* bias, T* y, long long cols) {                   \
        softmax_rows(z, bias, y, cols);                                                                              \
    }                                                                                                                \
    extern "C" __global__ void fastdl_softmax_backward_rows_##S(const T* grad_y, const T* y, T* grad_z,              \
                                                                long long cols) {                                    \
        softmax_backward_rows(grad_y, y, grad_z, cols);                                                              \
    }                                                                                                                \
    extern "C" __global__ void fastdl_count_nonfinite_##S(const T* x, long long n, double* partials) {               \
        count_nonfinite(x, n, partials);                                                                             \
    }

FASTDL_ACTIVATION_KERNELS(float, f32)
FASTDL_ACTIVATION_KERNELS(double, f64)

// bfloat16 compute: a Dense layer's GEMM operands rounded in one pass (float32 only)
extern "C" __global__ void fastdl_round_bfloat16_f32(const float* x, float* y, long long n) {
    FASTDL_GRID_STRIDE(i, n) { y[i] = fastdl_round_to_bfloat16(x[i]); }
}

// ... or straight into the bit patterns cuBLAS's bfloat16 GEMM reads (kernels/cuda/gemm.py)
extern "C" __global__ void fastdl_bfloat16_bits_f32(const float* x, unsigned short* bits, long long n) {
    FASTDL_GRID_STRIDE(i, n) { bits[i] = (unsigned short)(__float_as_uint(fastdl_round_to_bfloat16(x[i])) >> 16); }
}

// Sum of n doubles by one block, in a fixed order (the final step of every loss and count).
extern "C" __global__ void fastdl_sum_doubles(const double* values, long long n, double* out) {
    __shared__ double shared[32];
    double total = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) total += values[i];
    total = fastdl_block_reduce(total, 0.0, shared, FastdlAdd());
    if (threadIdx.x == 0) out[0] = total;
}
