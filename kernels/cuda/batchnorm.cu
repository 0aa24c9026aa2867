// Batch normalization over (N, C), the formulas of kernels/reference/normalization.py:
//   statistics_partials: blocks of (32 columns x 8 rows) over chunks of rows add, per column, the sums of
//     (x - K) and (x - K)^2 in float64 with the shift K = x[0, c] (stable for data with a large mean)
//   statistics: 32 threads per column add the chunks in a fixed order -> mean, biased variance,
//     1/sqrt(var + eps); a column whose sums are not finite clears *finite (set by statistics_partials)
//   normalize: y = act(weight * (x - mean) * inv_std + bias), one pass (train and eval; in evaluation it also
//     clears *finite for a NaN or Inf in x, set by eval_statistics); in training its first
//     row of blocks also updates the running statistics, running = (1 - f) running + f batch_stat with the
//     unbiased variance, and nothing when *finite is clear: all the kernels are queued at once and the host
//     reads the flag once, at the end
//   backward_partials / backward_totals / backward_dx: the sums of dz and dz * x_hat (dz = act'(z) dy,
//     recomputed, never stored), then dx = w inv_std / N (N dz - sum dz - x_hat sum(dz x_hat)), or w inv_std dz
//     in eval mode. code < 0 means dy already is dz (softmax's row-wise backward ran first).
// The element-wise passes come in variants: the activation switch at run time, the identity alone (_plain) and
// ReLU alone (_relu); see FASTDL_ANY_ACTIVATION.
#include "activations.cuh"

// Adds the block's 8 rows of (a, b) per column in order; row 0 stores them as this chunk's partials
// (partials[2 chunk][column], partials[2 chunk + 1][column]). Every thread calls it (it has a barrier).
__device__ __forceinline__ void fastdl_store_column_partials(double a, double b, long long column, long long cols,
                                                             double* partials) {
    __shared__ double shared[2][FASTDL_COLUMN_BLOCK_Y][FASTDL_COLUMN_BLOCK_X];
    shared[0][threadIdx.y][threadIdx.x] = a;
    shared[1][threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && column < cols) {
        double total_a = 0.0, total_b = 0.0;
        for (int k = 0; k < FASTDL_COLUMN_BLOCK_Y; ++k) {
            total_a += shared[0][k][threadIdx.x];
            total_b += shared[1][k][threadIdx.x];
        }
        partials[(2 * blockIdx.y) * cols + column] = total_a;
        partials[(2 * blockIdx.y + 1) * cols + column] = total_b;
    }
}

// A thread's rows in a chunk go 4 at a time (rows r, r + 8, r + 16, r + 24): four independent loads in flight per
// thread, then added in row order, so the sums are those of the one-row-at-a-time loop. One load per thread in
// flight left an H200 at a quarter of its bandwidth.

template <typename T>
__device__ void statistics_partials(const T* x, long long rows, long long cols, long long rows_per_chunk,
                                    double* partials, int* finite) {
    if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0 && threadIdx.y == 0) {
        *finite = 1;  // the statistics kernel, next in the stream, clears it for NaN or Inf
    }
    long long column = blockIdx.x * (long long)FASTDL_COLUMN_BLOCK_X + threadIdx.x;
    long long first = blockIdx.y * rows_per_chunk, last = min(rows, first + rows_per_chunk);
    double sum = 0.0, sum_squares = 0.0;
    if (column < cols) {
        double shift = (double)x[column];
        long long row = first + threadIdx.y;
        for (; row + (FASTDL_UNROLL - 1) * FASTDL_COLUMN_BLOCK_Y < last; row += FASTDL_UNROLL * FASTDL_COLUMN_BLOCK_Y) {
            T values[FASTDL_UNROLL];
            for (int u = 0; u < FASTDL_UNROLL; ++u) values[u] = x[(row + u * FASTDL_COLUMN_BLOCK_Y) * cols + column];
            for (int u = 0; u < FASTDL_UNROLL; ++u) {
                double d = (double)values[u] - shift;
                sum += d;
                sum_squares += d * d;
            }
        }
        for (; row < last; row += FASTDL_COLUMN_BLOCK_Y) {
            double d = (double)x[row * cols + column] - shift;
            sum += d;
            sum_squares += d * d;
        }
    }
    fastdl_store_column_partials(sum, sum_squares, column, cols, partials);
}

// Adds the chunks' partial pairs of column c in a fixed order: thread row ty takes chunks ty, ty + 32, ..., then
// row 0 adds the 32 rows' sums in order. 32 chains per column instead of one: with one thread per column, the
// serial chain over 256+ chunks (64K rows) took longer than reading x. Every thread of the (32, 32) block calls
// it (it has a barrier); the sums are valid in threadIdx.y == 0.
__device__ __forceinline__ void fastdl_combine_chunks(const double* partials, long long chunks, long long cols,
                                                      long long c, double* a, double* b) {
    __shared__ double shared[2][FASTDL_COMBINE_Y][FASTDL_COLUMN_BLOCK_X];
    double sum_a = 0.0, sum_b = 0.0;
    if (c < cols) {
        for (long long k = threadIdx.y; k < chunks; k += FASTDL_COMBINE_Y) {
            sum_a += partials[(2 * k) * cols + c];
            sum_b += partials[(2 * k + 1) * cols + c];
        }
    }
    shared[0][threadIdx.y][threadIdx.x] = sum_a;
    shared[1][threadIdx.y][threadIdx.x] = sum_b;
    __syncthreads();
    if (threadIdx.y == 0) {
        sum_a = 0.0;
        sum_b = 0.0;
        for (int k = 0; k < FASTDL_COMBINE_Y; ++k) {
            sum_a += shared[0][k][threadIdx.x];
            sum_b += shared[1][k][threadIdx.x];
        }
        *a = sum_a;
        *b = sum_b;
    }
}

template <typename T>
__device__ void statistics(const T* x, const double* partials, long long chunks, long long rows, long long cols,
                           double eps, double* mean, double* inv_std, double* variance, int* finite) {
    long long c = blockIdx.x * (long long)FASTDL_COLUMN_BLOCK_X + threadIdx.x;
    double sum, sum_squares;
    fastdl_combine_chunks(partials, chunks, cols, c, &sum, &sum_squares);
    if (threadIdx.y != 0 || c >= cols) return;
    if (!isfinite(sum) || !isfinite(sum_squares)) *finite = 0;  // every writer stores the same 0
    double shifted_mean = sum / (double)rows;
    double var = max(sum_squares / (double)rows - shifted_mean * shifted_mean, 0.0);
    mean[c] = (double)x[c] + shifted_mean;
    variance[c] = var;
    inv_std[c] = 1.0 / sqrt(var + eps);
}

// Column c's running statistics, from the first row of the normalize pass's blocks: queued behind the statistics
// without a round trip to the host (and without a launch of its own), it reads their finite flag itself and
// leaves the running statistics untouched when x held NaN or Inf.
template <typename T>
__device__ __forceinline__ void running_update(T* running_mean, T* running_var, const double* mean,
                                               const double* variance, long long c, double factor, long long rows,
                                               const int* finite) {
    if (*finite == 0) return;
    running_mean[c] = T((1.0 - factor) * (double)running_mean[c] + factor * mean[c]);
    running_var[c] = T((1.0 - factor) * (double)running_var[c] +
                       factor * variance[c] * (double)rows / (double)(rows - 1));
}

template <typename T>
__device__ void eval_statistics(const T* running_mean, const T* running_var, long long cols, double eps, double* mean,
                                double* inv_std, int* finite) {
    if (blockIdx.x == 0 && threadIdx.x == 0) *finite = 1;  // the normalize pass, next in the stream, may clear it
    for (long long c = blockIdx.x * (long long)blockDim.x + threadIdx.x; c < cols; c += (long long)blockDim.x * gridDim.x) {
        mean[c] = (double)running_mean[c];
        inv_std[c] = 1.0 / sqrt((double)running_var[c] + eps);
    }
}

// The element-wise passes run on (32 columns x 8 rows) blocks over tiles of 32 rows, striding down the tiles: each
// thread keeps its column's mean, 1/std, weight and bias in registers, loads its 4 rows of a tile before using
// them, and no integer division finds an element's column.
#define FASTDL_TILE_ROWS (FASTDL_UNROLL * FASTDL_COLUMN_BLOCK_Y)
#define FASTDL_FOR_TILES(base, rows)                                                                        \
    for (long long base = blockIdx.y * (long long)FASTDL_TILE_ROWS + threadIdx.y; base < (rows);             \
         base += (long long)FASTDL_TILE_ROWS * gridDim.y)

// A column's affine map: x_hat = (x - mean) * inv_std, z = weight * x_hat + bias (in float64, as the reference).
struct FastdlBnColumn {
    double mean, inv_std, weight, bias;
    template <typename T>
    __device__ FastdlBnColumn(const T* weight_, const T* bias_, const double* mean_, const double* inv_std_,
                              long long c)
        : mean(mean_[c]), inv_std(inv_std_[c]), weight((double)weight_[c]), bias((double)bias_[c]) {}
    template <typename T> __device__ __forceinline__ T z(T x, double* x_hat) const {
        *x_hat = ((double)x - mean) * inv_std;
        return T(weight * *x_hat + bias);
    }
};

// factor < 0: no running statistics to update (evaluation, or track_running_stats=False; the pointers may be null).
// An element of x that is NaN or Inf clears *finite.
// Fixed: the activation compiled into the element-wise passes, or FASTDL_ANY_ACTIVATION for the run-time `code`.
// The switch over every activation, with its inlined transcendentals, costs registers and occupancy (measured on
// an H200: a pass with it streamed at half a copy's rate, and at ~90% in the same shape without it), so the
// identity (also used for softmax, applied afterwards) and ReLU, the common cases, get kernels of their own.
#define FASTDL_ANY_ACTIVATION (-2)

template <int Fixed> __device__ __forceinline__ int fastdl_bn_activation(int code) {
    return Fixed == FASTDL_ANY_ACTIVATION ? code : Fixed;
}

template <typename T, int Fixed>
__device__ void normalize(const T* x, const T* weight, const T* bias, const double* mean, const double* inv_std, T* y,
                          long long rows, long long cols, int code, T p0, T p1, u64 seed, u64 counter,
                          T* running_mean, T* running_var, const double* variance, double factor, int* finite) {
    long long c = blockIdx.x * (long long)FASTDL_COLUMN_BLOCK_X + threadIdx.x;
    if (c >= cols) return;
    code = fastdl_bn_activation<Fixed>(code);
    if (factor >= 0.0 && blockIdx.y == 0 && threadIdx.y == 0) {
        running_update(running_mean, running_var, mean, variance, c, factor, rows, finite);
    }
    FastdlBnColumn column(weight, bias, mean, inv_std, c);
    FASTDL_FOR_TILES(base, rows) {
        T values[FASTDL_UNROLL];
        for (int u = 0; u < FASTDL_UNROLL; ++u) {
            long long row = base + u * FASTDL_COLUMN_BLOCK_Y;
            if (row < rows) values[u] = x[row * cols + c];
        }
        bool all_finite = true;  // evaluation learns of NaN or Inf here (training already did, from the sums)
        for (int u = 0; u < FASTDL_UNROLL; ++u) {
            if (base + u * FASTDL_COLUMN_BLOCK_Y < rows) all_finite = all_finite && isfinite(values[u]);
        }
        if (!all_finite) *finite = 0;
        for (int u = 0; u < FASTDL_UNROLL; ++u) {
            long long row = base + u * FASTDL_COLUMN_BLOCK_Y, i = row * cols + c;
            if (row >= rows) break;
            double x_hat;
            T z = column.z(values[u], &x_hat);
            bool plain = code == FASTDL_IDENTITY || code < 0;
            y[i] = plain ? z : fastdl_activate(code, z, p0, p1, seed, counter, (u64)i, c);
        }
    }
}

// dz = act'(z) dy, z recomputed from x; code < 0: dy already is dz.
template <typename T>
__device__ __forceinline__ T fastdl_bn_dz(const FastdlBnColumn& column, T x, T dy, T y, long long i, long long c,
                                          int code, T p0, T p1, u64 seed, u64 counter, double* x_hat) {
    T z = column.z(x, x_hat);
    if (code == FASTDL_IDENTITY || code < 0) return dy;
    return dy * fastdl_derivative(code, z, y, p0, p1, seed, counter, (u64)i, c);
}

// The three inputs of dz at element i (y only where the activation's derivative reads it).
template <typename T> struct FastdlBnInputs {
    T x, dy, y;
    __device__ __forceinline__ void load(const T* x_, const T* dy_, const T* y_, long long i, int code) {
        x = x_[i];
        dy = dy_[i];
        y = code < 0 ? T(0) : fastdl_output_if_read(code, y_, i);
    }
};

template <typename T, int Fixed>
__device__ void backward_partials(const T* x, const T* grad_y, const T* y, const T* weight, const T* bias,
                                  const double* mean, const double* inv_std, double* partials, long long rows,
                                  long long cols, long long rows_per_chunk, int code, T p0, T p1, u64 seed,
                                  u64 counter) {
    long long c = blockIdx.x * (long long)FASTDL_COLUMN_BLOCK_X + threadIdx.x;
    long long first = blockIdx.y * rows_per_chunk, last = min(rows, first + rows_per_chunk);
    double sum_dz = 0.0, sum_dz_x_hat = 0.0;
    code = fastdl_bn_activation<Fixed>(code);
    if (c < cols) {
        FastdlBnColumn column(weight, bias, mean, inv_std, c);
        for (long long row = first + threadIdx.y; row < last; row += FASTDL_TILE_ROWS) {
            FastdlBnInputs<T> in[FASTDL_UNROLL];
            for (int u = 0; u < FASTDL_UNROLL; ++u) {
                long long r = row + u * FASTDL_COLUMN_BLOCK_Y;
                if (r < last) in[u].load(x, grad_y, y, r * cols + c, code);
            }
            for (int u = 0; u < FASTDL_UNROLL; ++u) {
                long long r = row + u * FASTDL_COLUMN_BLOCK_Y;
                if (r >= last) break;
                double x_hat;
                double dz = (double)fastdl_bn_dz<T>(column, in[u].x, in[u].dy, in[u].y, r * cols + c, c, code, p0,
                                                    p1, seed, counter, &x_hat);
                sum_dz += dz;
                sum_dz_x_hat += dz * x_hat;
            }
        }
    }
    fastdl_store_column_partials(sum_dz, sum_dz_x_hat, c, cols, partials);
}

template <typename T>
__device__ void backward_totals(const double* partials, long long chunks, long long cols, double* totals,
                                T* grad_weight, T* grad_bias, int accumulate) {
    long long c = blockIdx.x * (long long)FASTDL_COLUMN_BLOCK_X + threadIdx.x;
    double sum_dz, sum_dz_x_hat;
    fastdl_combine_chunks(partials, chunks, cols, c, &sum_dz, &sum_dz_x_hat);
    if (threadIdx.y != 0 || c >= cols) return;
    totals[c] = sum_dz;
    totals[cols + c] = sum_dz_x_hat;
    grad_bias[c] = accumulate ? T(grad_bias[c] + T(sum_dz)) : T(sum_dz);
    grad_weight[c] = accumulate ? T(grad_weight[c] + T(sum_dz_x_hat)) : T(sum_dz_x_hat);
}

template <typename T, int Fixed>
__device__ void backward_dx(const T* x, const T* grad_y, const T* y, const T* weight, const T* bias,
                            const double* mean, const double* inv_std, const double* totals, T* grad_x, long long rows,
                            long long cols, int training, int code, T p0, T p1, u64 seed, u64 counter) {
    long long c = blockIdx.x * (long long)FASTDL_COLUMN_BLOCK_X + threadIdx.x;
    if (c >= cols) return;
    code = fastdl_bn_activation<Fixed>(code);
    FastdlBnColumn column(weight, bias, mean, inv_std, c);
    // dx = w inv_std / N (N dz - sum dz - x_hat sum(dz x_hat)): the per-column factor divided once, not per element
    double scale = column.weight * column.inv_std, scale_over_rows = scale / (double)rows;
    double sum_dz = totals[c], sum_dz_x_hat = totals[cols + c];
    FASTDL_FOR_TILES(base, rows) {
        FastdlBnInputs<T> in[FASTDL_UNROLL];
        for (int u = 0; u < FASTDL_UNROLL; ++u) {
            long long row = base + u * FASTDL_COLUMN_BLOCK_Y;
            if (row < rows) in[u].load(x, grad_y, y, row * cols + c, code);
        }
        for (int u = 0; u < FASTDL_UNROLL; ++u) {
            long long row = base + u * FASTDL_COLUMN_BLOCK_Y, i = row * cols + c;
            if (row >= rows) break;
            double x_hat;
            double dz = (double)fastdl_bn_dz<T>(column, in[u].x, in[u].dy, in[u].y, i, c, code, p0, p1, seed, counter,
                                                &x_hat);
            grad_x[i] = training ? T(scale_over_rows * ((double)rows * dz - sum_dz - x_hat * sum_dz_x_hat))
                                 : T(scale * dz);
        }
    }
}

#define FASTDL_BATCHNORM_KERNELS(T, S)                                                                               \
    extern "C" __global__ void fastdl_bn_statistics_partials_##S(const T* x, long long rows, long long cols,          \
                                                                 long long rows_per_chunk, double* partials,          \
                                                                 int* finite) {                                      \
        statistics_partials(x, rows, cols, rows_per_chunk, partials, finite);                                        \
    }                                                                                                                \
    extern "C" __global__ void fastdl_bn_statistics_##S(const T* x, const double* partials, long long chunks,         \
                                                        long long rows, long long cols, double eps, double* mean,     \
                                                        double* inv_std, double* variance, int* finite) {            \
        statistics(x, partials, chunks, rows, cols, eps, mean, inv_std, variance, finite);                           \
    }                                                                                                                \
    extern "C" __global__ void fastdl_bn_eval_statistics_##S(const T* running_mean, const T* running_var,            \
                                                             long long cols, double eps, double* mean,                \
                                                             double* inv_std, int* finite) {                         \
        eval_statistics(running_mean, running_var, cols, eps, mean, inv_std, finite);                                \
    }                                                                                                                \
    extern "C" __global__ void fastdl_bn_backward_totals_##S(const double* partials, long long chunks, long long cols, \
                                                             double* totals, T* grad_weight, T* grad_bias,            \
                                                             int accumulate) {                                       \
        backward_totals(partials, chunks, cols, totals, grad_weight, grad_bias, accumulate);                         \
    }

// The element-wise passes, once per variant V with activation A: the run-time switch (no suffix), the identity
// (_plain) and ReLU (_relu).
#define FASTDL_BATCHNORM_PASSES(T, S, V, A)                                                                          \
    extern "C" __global__ void fastdl_bn_normalize##V##_##S(                                                         \
        const T* x, const T* weight, const T* bias, const double* mean, const double* inv_std, T* y, long long rows, \
        long long cols, int code, T p0, T p1, u64 seed, u64 counter, T* running_mean, T* running_var,                \
        const double* variance, double factor, int* finite) {                                                        \
        normalize<T, A>(x, weight, bias, mean, inv_std, y, rows, cols, code, p0, p1, seed, counter, running_mean,    \
                        running_var, variance, factor, finite);                                                      \
    }                                                                                                                \
    extern "C" __global__ void fastdl_bn_backward_partials##V##_##S(                                                 \
        const T* x, const T* grad_y, const T* y, const T* weight, const T* bias, const double* mean,                 \
        const double* inv_std, double* partials, long long rows, long long cols, long long rows_per_chunk, int code, \
        T p0, T p1, u64 seed, u64 counter) {                                                                         \
        backward_partials<T, A>(x, grad_y, y, weight, bias, mean, inv_std, partials, rows, cols, rows_per_chunk,     \
                                code, p0, p1, seed, counter);                                                        \
    }                                                                                                                \
    extern "C" __global__ void fastdl_bn_backward_dx##V##_##S(                                                       \
        const T* x, const T* grad_y, const T* y, const T* weight, const T* bias, const double* mean,                 \
        const double* inv_std, const double* totals, T* grad_x, long long rows, long long cols, int training,        \
        int code, T p0, T p1, u64 seed, u64 counter) {                                                               \
        backward_dx<T, A>(x, grad_y, y, weight, bias, mean, inv_std, totals, grad_x, rows, cols, training, code, p0, \
                          p1, seed, counter);                                                                        \
    }

FASTDL_BATCHNORM_KERNELS(float, f32)
FASTDL_BATCHNORM_KERNELS(double, f64)
FASTDL_BATCHNORM_PASSES(float, f32, , FASTDL_ANY_ACTIVATION)
FASTDL_BATCHNORM_PASSES(double, f64, , FASTDL_ANY_ACTIVATION)
FASTDL_BATCHNORM_PASSES(float, f32, _plain, FASTDL_IDENTITY)
FASTDL_BATCHNORM_PASSES(double, f64, _plain, FASTDL_IDENTITY)
FASTDL_BATCHNORM_PASSES(float, f32, _relu, FASTDL_RELU)
FASTDL_BATCHNORM_PASSES(double, f64, _relu, FASTDL_RELU)
