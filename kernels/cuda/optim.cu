// Optimizer updates over one flat parameter buffer: one launch per step, each element read once and written
// once. Hyperparameters arrive as one float64 row per parameter group (hyper, `columns` wide; the columns of each
// update are listed in kernels/ops.py), narrowed to the parameters' type once per piece, so changing lr never
// recompiles and any number of groups is one launch. Piece k of the buffer, [piece_bounds[k], piece_bounds[k+1]),
// takes row piece_groups[k]; `blocks_per_piece` blocks share a piece (grid-stride inside it) and the grid walks the
// pieces. Optional state (AMSGrad's max, RMSprop's grad_avg and momentum buffer) is a null pointer when absent.
// Formulas: kernels/reference/optim.py; the same operations, in the same order, as kernels/cpu/optim.py.
#include "common.cuh"

template <typename T>
__device__ __forceinline__ T fastdl_gradient(const T* param, const T* grad, long long i, T grad_scale, T weight_decay,
                                             T l1) {
    T p = param[i];
    return grad[i] * grad_scale + weight_decay * p + l1 * fastdl_sign(p);
}

// The launcher makes gridDim.x a multiple of blocks_per_piece.
#define FASTDL_FOR_PIECES(piece, pieces, blocks_per_piece)                                                          \
    for (long long piece = blockIdx.x / (blocks_per_piece); piece < (pieces); piece += gridDim.x / (blocks_per_piece))

#define FASTDL_FOR_PIECE_ELEMENTS(i, start, stop, blocks_per_piece)                                                 \
    for (long long i = (start) + (long long)(blockIdx.x % (blocks_per_piece)) * blockDim.x + threadIdx.x; i < (stop); \
         i += (long long)(blocks_per_piece) * blockDim.x)

// Everything a grouped update needs to find its pieces and their rows.
struct FastdlGroups {
    const double* hyper;
    int columns;
    const long long* piece_bounds;
    const long long* piece_groups;
    long long pieces;
    int blocks_per_piece;
    __device__ const double* row(long long piece) const { return hyper + piece_groups[piece] * columns; }
};

#define FASTDL_GROUP_PARAMETERS                                                                                     \
    const double *hyper, int columns, const long long *piece_bounds, const long long *piece_groups, long long pieces, \
        int blocks_per_piece
#define FASTDL_GROUPS FastdlGroups{hyper, columns, piece_bounds, piece_groups, pieces, blocks_per_piece}

template <typename T>
__device__ void sgd(T* param, const T* grad, T grad_scale, FastdlGroups groups) {
    FASTDL_FOR_PIECES(piece, groups.pieces, groups.blocks_per_piece) {
        const double* row = groups.row(piece);
        T weight_decay = T(row[0]), l1 = T(row[1]), lr = T(row[2]);
        FASTDL_FOR_PIECE_ELEMENTS(i, groups.piece_bounds[piece], groups.piece_bounds[piece + 1],
                                  groups.blocks_per_piece) {
            param[i] -= lr * fastdl_gradient(param, grad, i, grad_scale, weight_decay, l1);
        }
    }
}

template <typename T>
__device__ void sgd_momentum(T* param, const T* grad, T* buffer, T grad_scale, FastdlGroups groups) {
    FASTDL_FOR_PIECES(piece, groups.pieces, groups.blocks_per_piece) {
        const double* row = groups.row(piece);
        T weight_decay = T(row[0]), l1 = T(row[1]), lr = T(row[2]), buffer_decay = T(row[3]);
        T grad_coefficient = T(row[4]), direct = T(row[5]), lookahead = T(row[6]);
        FASTDL_FOR_PIECE_ELEMENTS(i, groups.piece_bounds[piece], groups.piece_bounds[piece + 1],
                                  groups.blocks_per_piece) {
            T g = fastdl_gradient(param, grad, i, grad_scale, weight_decay, l1);
            T b = buffer_decay * buffer[i] + grad_coefficient * g;
            buffer[i] = b;
            param[i] -= lr * (direct * g + lookahead * b);
        }
    }
}

template <typename T>
__device__ void adagrad(T* param, const T* grad, T* sum_of_squared, T grad_scale, FastdlGroups groups) {
    FASTDL_FOR_PIECES(piece, groups.pieces, groups.blocks_per_piece) {
        const double* row = groups.row(piece);
        T weight_decay = T(row[0]), l1 = T(row[1]), lr = T(row[2]), eps = T(row[3]);
        FASTDL_FOR_PIECE_ELEMENTS(i, groups.piece_bounds[piece], groups.piece_bounds[piece + 1],
                                  groups.blocks_per_piece) {
            T g = fastdl_gradient(param, grad, i, grad_scale, weight_decay, l1);
            T total = sum_of_squared[i] + g * g;
            sum_of_squared[i] = total;
            param[i] -= lr * g / (sqrt(total) + eps);
        }
    }
}

template <typename T>
__device__ void rmsprop(T* param, const T* grad, T* square_avg, T* grad_avg, T* buffer, T grad_scale,
                        FastdlGroups groups) {
    FASTDL_FOR_PIECES(piece, groups.pieces, groups.blocks_per_piece) {
        const double* row = groups.row(piece);
        T weight_decay = T(row[0]), l1 = T(row[1]), lr = T(row[2]), alpha = T(row[3]), eps = T(row[4]);
        T momentum = T(row[5]);
        FASTDL_FOR_PIECE_ELEMENTS(i, groups.piece_bounds[piece], groups.piece_bounds[piece + 1],
                                  groups.blocks_per_piece) {
            T g = fastdl_gradient(param, grad, i, grad_scale, weight_decay, l1);
            T v = alpha * square_avg[i] + (T(1) - alpha) * g * g;
            square_avg[i] = v;
            if (grad_avg != nullptr) {
                T a = alpha * grad_avg[i] + (T(1) - alpha) * g;
                grad_avg[i] = a;
                v = v - a * a;
            }
            T step = g / (sqrt(v) + eps);
            if (buffer != nullptr) {
                step = momentum * buffer[i] + step;
                buffer[i] = step;
            }
            param[i] -= lr * step;
        }
    }
}

// Adam's scalars for one piece, narrowed from its group's row.
template <typename T> struct FastdlAdamScalars {
    T weight_decay, l1, decay_factor, beta1, beta2, step_size, bias_correction2_sqrt, eps;
    __device__ explicit FastdlAdamScalars(const double* row)
        : weight_decay(T(row[0])), l1(T(row[1])), decay_factor(T(row[2])), beta1(T(row[3])), beta2(T(row[4])),
          step_size(T(row[5])), bias_correction2_sqrt(T(row[6])), eps(T(row[7])) {}
};

template <typename T>
__device__ __forceinline__ void fastdl_adam_element(T& p, T grad, T& m, T& v, T grad_scale,
                                                    const FastdlAdamScalars<T>& s) {
    T g = grad * grad_scale + s.weight_decay * p + s.l1 * fastdl_sign(p);
    m = s.beta1 * m + (T(1) - s.beta1) * g;
    v = s.beta2 * v + (T(1) - s.beta2) * g * g;
    p = p * s.decay_factor - s.step_size * m / (sqrt(v) / s.bias_correction2_sqrt + s.eps);
}

template <typename T>
__device__ void adam(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, T grad_scale,
                     FastdlGroups groups) {
    FASTDL_FOR_PIECES(piece, groups.pieces, groups.blocks_per_piece) {
        FastdlAdamScalars<T> s(groups.row(piece));
        FASTDL_FOR_PIECE_ELEMENTS(i, groups.piece_bounds[piece], groups.piece_bounds[piece + 1],
                                  groups.blocks_per_piece) {
            T g = fastdl_gradient(param, grad, i, grad_scale, s.weight_decay, s.l1);
            T m = s.beta1 * exp_avg[i] + (T(1) - s.beta1) * g;
            T v = s.beta2 * exp_avg_sq[i] + (T(1) - s.beta2) * g * g;
            exp_avg[i] = m;
            exp_avg_sq[i] = v;
            if (max_exp_avg_sq != nullptr) {
                v = max(max_exp_avg_sq[i], v);
                max_exp_avg_sq[i] = v;
            }
            param[i] = param[i] * s.decay_factor - s.step_size * m / (sqrt(v) / s.bias_correction2_sqrt + s.eps);
        }
    }
}

// Adam without AMSGrad on 16-byte packs (4 floats or 2 doubles: one 128-bit load or store per array and pack),
// the same formulas as adam() above, element by element. The launcher takes it when the arrays and every piece
// start are 16-byte aligned; a piece's last (length % pack) elements are done one by one by its first thread.
// Wider accesses keep more bytes in flight per thread (docs/gpu.md).
template <typename T> struct alignas(16) FastdlPack {
    static constexpr int size = 16 / sizeof(T);
    T v[size];
};

template <typename T>
__device__ void adam_packed(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T grad_scale, FastdlGroups groups) {
    typedef FastdlPack<T> Pack;
    FASTDL_FOR_PIECES(piece, groups.pieces, groups.blocks_per_piece) {
        FastdlAdamScalars<T> s(groups.row(piece));
        long long start = groups.piece_bounds[piece], stop = groups.piece_bounds[piece + 1];
        long long first_pack = start / Pack::size, packs = (stop - start) / Pack::size;
        FASTDL_FOR_PIECE_ELEMENTS(k, first_pack, first_pack + packs, groups.blocks_per_piece) {
            Pack p = ((Pack*)param)[k], g = ((const Pack*)grad)[k], m = ((Pack*)exp_avg)[k];
            Pack v = ((Pack*)exp_avg_sq)[k];
            for (int j = 0; j < Pack::size; ++j) {
                fastdl_adam_element(p.v[j], g.v[j], m.v[j], v.v[j], grad_scale, s);
            }
            ((Pack*)param)[k] = p;
            ((Pack*)exp_avg)[k] = m;
            ((Pack*)exp_avg_sq)[k] = v;
        }
        if (blockIdx.x % groups.blocks_per_piece == 0 && threadIdx.x == 0) {
            for (long long i = start + packs * Pack::size; i < stop; ++i) {
                fastdl_adam_element(param[i], grad[i], exp_avg[i], exp_avg_sq[i], grad_scale, s);
            }
        }
    }
}

// Adam with bfloat16 moments (unsigned short bits), float32 parameters: the formulas of
// kernels/reference/optim.py's adam_bfloat16_step, the same random draws as the CPU (element i's key is
// i + key_offset, key_offset from the seed and the step: kernels/bfloat16.py).
__device__ void adam_bfloat16(float* param, const float* grad, unsigned short* exp_avg, unsigned short* exp_avg_sq,
                              unsigned int key_offset, float grad_scale, FastdlGroups groups) {
    FASTDL_FOR_PIECES(piece, groups.pieces, groups.blocks_per_piece) {
        FastdlAdamScalars<float> s(groups.row(piece));
        FASTDL_FOR_PIECE_ELEMENTS(i, groups.piece_bounds[piece], groups.piece_bounds[piece + 1],
                                  groups.blocks_per_piece) {
            float g = fastdl_gradient(param, grad, i, grad_scale, s.weight_decay, s.l1);
            float m = s.beta1 * fastdl_bfloat16_to_float(exp_avg[i]) + (1.0f - s.beta1) * g;
            float v = s.beta2 * fastdl_bfloat16_to_float(exp_avg_sq[i]) + (1.0f - s.beta2) * g * g;
            param[i] = param[i] * s.decay_factor - s.step_size * m / (sqrt(v) / s.bias_correction2_sqrt + s.eps);
            unsigned int draw = fastdl_rounding_bits((unsigned int)i + key_offset);
            exp_avg[i] = fastdl_float_to_bfloat16(m, draw >> 16);
            exp_avg_sq[i] = fastdl_float_to_bfloat16(v, draw & 0xFFFFu);
        }
    }
}

extern "C" __global__ void fastdl_adam_bfloat16_step_f32(float* param, const float* grad, unsigned short* exp_avg,
                                                         unsigned short* exp_avg_sq, unsigned int key_offset,
                                                         float grad_scale, FASTDL_GROUP_PARAMETERS) {
    adam_bfloat16(param, grad, exp_avg, exp_avg_sq, key_offset, grad_scale, FASTDL_GROUPS);
}

// This block's two sums into partials[2 * block], partials[2 * block + 1] (fixed-order block reductions).
__device__ __forceinline__ void fastdl_store_piece_sums(double a, double b, double* shared, double* partials) {
    double total_a = fastdl_block_sum(a, shared);
    __syncthreads();
    double total_b = fastdl_block_sum(b, shared);
    if (threadIdx.x == 0) {
        partials[2 * blockIdx.x] = total_a;
        partials[2 * blockIdx.x + 1] = total_b;
    }
}

// Sums of squares per piece (one block per piece, fixed-order block reduction), then per segment (one thread per
// segment adds its pieces in order): the same pieces and combination order as the CPU, so the same norms up to
// the order inside a piece.
template <typename T>
__device__ void piece_sums_of_squares(const T* first, const T* second, const long long* piece_bounds, double* partials) {
    __shared__ double shared[FASTDL_BLOCK];
    long long start = piece_bounds[blockIdx.x], stop = piece_bounds[blockIdx.x + 1];
    double a = 0.0, b = 0.0;
    for (long long i = start + threadIdx.x; i < stop; i += FASTDL_BLOCK) {
        double x = (double)first[i];
        a += x * x;
        if (second != nullptr) {
            double y = (double)second[i];
            b += y * y;
        }
    }
    fastdl_store_piece_sums(a, b, shared, partials);
}

// LARS and LAMB work per tensor (a trust ratio each): one block per piece of the flat buffer (pieces never
// straddle two tensors), ratios[piece_segments[piece]] its tensor's ratio, computed on the host from the norms, and
// hyper's row piece_groups[piece] its group's hyperparameters (columns in kernels/ops.py: LARS_COLUMNS,
// LAMB_COLUMNS).
template <typename T>
__device__ void lars(T* param, const T* grad, T* buffer, const double* ratios, const long long* piece_segments,
                     T grad_scale, const double* hyper, int columns, const long long* piece_bounds,
                     const long long* piece_groups) {
    const double* row = hyper + piece_groups[blockIdx.x] * columns;
    T weight_decay = T(row[0]), l1 = T(row[1]), momentum = T(row[3]);
    T local_lr = T(row[2] * ratios[piece_segments[blockIdx.x]]);
    for (long long i = piece_bounds[blockIdx.x] + threadIdx.x; i < piece_bounds[blockIdx.x + 1]; i += blockDim.x) {
        T b = momentum * buffer[i] + local_lr * fastdl_gradient(param, grad, i, grad_scale, weight_decay, l1);
        buffer[i] = b;
        param[i] -= b;
    }
}

template <typename T>
__device__ __forceinline__ T fastdl_lamb_direction(const T* param, const T* exp_avg, const T* exp_avg_sq, long long i,
                                                   T weight_decay, T bias_correction1, T bias_correction2, T eps) {
    return (exp_avg[i] / bias_correction1) / (sqrt(exp_avg_sq[i] / bias_correction2) + eps) + weight_decay * param[i];
}

// Moments, then this piece's (||p||^2, ||r||^2) into partials; each thread rereads only what it wrote.
template <typename T>
__device__ void lamb_moments(const T* param, const T* grad, T* exp_avg, T* exp_avg_sq, double* partials, T grad_scale,
                             const double* hyper, int columns, const long long* piece_bounds,
                             const long long* piece_groups) {
    __shared__ double shared[FASTDL_BLOCK];
    const double* row = hyper + piece_groups[blockIdx.x] * columns;
    T weight_decay = T(row[0]), l1 = T(row[1]), beta1 = T(row[3]), beta2 = T(row[4]);
    T bias_correction1 = T(row[5]), bias_correction2 = T(row[6]), eps = T(row[7]);
    long long start = piece_bounds[blockIdx.x], stop = piece_bounds[blockIdx.x + 1];
    double param_squares = 0.0, direction_squares = 0.0;
    for (long long i = start + threadIdx.x; i < stop; i += FASTDL_BLOCK) {
        T g = fastdl_gradient(param, grad, i, grad_scale, T(0), l1);
        exp_avg[i] = beta1 * exp_avg[i] + (T(1) - beta1) * g;
        exp_avg_sq[i] = beta2 * exp_avg_sq[i] + (T(1) - beta2) * g * g;
        double p = (double)param[i];
        double r = (double)fastdl_lamb_direction(param, exp_avg, exp_avg_sq, i, weight_decay, bias_correction1,
                                                 bias_correction2, eps);
        param_squares += p * p;
        direction_squares += r * r;
    }
    fastdl_store_piece_sums(param_squares, direction_squares, shared, partials);
}

template <typename T>
__device__ void lamb_apply(T* param, const T* exp_avg, const T* exp_avg_sq, const double* ratios,
                           const long long* piece_segments, const double* hyper, int columns,
                           const long long* piece_bounds, const long long* piece_groups) {
    const double* row = hyper + piece_groups[blockIdx.x] * columns;
    T weight_decay = T(row[0]), bias_correction1 = T(row[5]), bias_correction2 = T(row[6]), eps = T(row[7]);
    T local_lr = T(row[2] * ratios[piece_segments[blockIdx.x]]);
    for (long long i = piece_bounds[blockIdx.x] + threadIdx.x; i < piece_bounds[blockIdx.x + 1]; i += blockDim.x) {
        param[i] -= local_lr * fastdl_lamb_direction(param, exp_avg, exp_avg_sq, i, weight_decay, bias_correction1,
                                                     bias_correction2, eps);
    }
}

#define FASTDL_OPTIM_KERNELS(T, S)                                                                                   \
    extern "C" __global__ void fastdl_sgd_step_##S(T* param, const T* grad, T grad_scale, FASTDL_GROUP_PARAMETERS) { \
        sgd(param, grad, grad_scale, FASTDL_GROUPS);                                                                 \
    }                                                                                                                \
    extern "C" __global__ void fastdl_sgd_momentum_step_##S(T* param, const T* grad, T* buffer, T grad_scale,        \
                                                            FASTDL_GROUP_PARAMETERS) {                               \
        sgd_momentum(param, grad, buffer, grad_scale, FASTDL_GROUPS);                                                \
    }                                                                                                                \
    extern "C" __global__ void fastdl_adagrad_step_##S(T* param, const T* grad, T* sum_of_squared, T grad_scale,     \
                                                       FASTDL_GROUP_PARAMETERS) {                                    \
        adagrad(param, grad, sum_of_squared, grad_scale, FASTDL_GROUPS);                                             \
    }                                                                                                                \
    extern "C" __global__ void fastdl_rmsprop_step_##S(T* param, const T* grad, T* square_avg, T* grad_avg,          \
                                                       T* buffer, T grad_scale, FASTDL_GROUP_PARAMETERS) {           \
        rmsprop(param, grad, square_avg, grad_avg, buffer, grad_scale, FASTDL_GROUPS);                               \
    }                                                                                                                \
    extern "C" __global__ void fastdl_adam_step_##S(T* param, const T* grad, T* exp_avg, T* exp_avg_sq,              \
                                                    T* max_exp_avg_sq, T grad_scale, FASTDL_GROUP_PARAMETERS) {      \
        adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, grad_scale, FASTDL_GROUPS);                           \
    }                                                                                                                \
    extern "C" __global__ void fastdl_adam_packed_step_##S(T* param, const T* grad, T* exp_avg, T* exp_avg_sq,       \
                                                           T grad_scale, FASTDL_GROUP_PARAMETERS) {                  \
        adam_packed(param, grad, exp_avg, exp_avg_sq, grad_scale, FASTDL_GROUPS);                                    \
    }                                                                                                                \
    extern "C" __global__ void fastdl_piece_sums_of_squares_##S(const T* first, const T* second,                     \
                                                                const long long* piece_bounds, double* partials) {   \
        piece_sums_of_squares(first, second, piece_bounds, partials);                                                \
    }                                                                                                                \
    extern "C" __global__ void fastdl_lars_step_##S(T* param, const T* grad, T* buffer, const double* ratios,        \
                                                    const long long* piece_segments, T grad_scale,                   \
                                                    const double* hyper, int columns, const long long* piece_bounds, \
                                                    const long long* piece_groups) {                                 \
        lars(param, grad, buffer, ratios, piece_segments, grad_scale, hyper, columns, piece_bounds, piece_groups);   \
    }                                                                                                                \
    extern "C" __global__ void fastdl_lamb_moments_##S(const T* param, const T* grad, T* exp_avg, T* exp_avg_sq,     \
                                                       double* partials, T grad_scale, const double* hyper,          \
                                                       int columns, const long long* piece_bounds,                   \
                                                       const long long* piece_groups) {                              \
        lamb_moments(param, grad, exp_avg, exp_avg_sq, partials, grad_scale, hyper, columns, piece_bounds,           \
                     piece_groups);                                                                                  \
    }                                                                                                                \
    extern "C" __global__ void fastdl_lamb_apply_##S(T* param, const T* exp_avg, const T* exp_avg_sq,                \
                                                     const double* ratios, const long long* piece_segments,          \
                                                     const double* hyper, int columns,                               \
                                                     const long long* piece_bounds, const long long* piece_groups) { \
        lamb_apply(param, exp_avg, exp_avg_sq, ratios, piece_segments, hyper, columns, piece_bounds, piece_groups);  \
    }

FASTDL_OPTIM_KERNELS(float, f32)
FASTDL_OPTIM_KERNELS(double, f64)

extern "C" __global__ void fastdl_segment_sums(const double* partials, const long long* piece_segments, int pieces,
                                               int segments, double* sums) {
    int segment = blockIdx.x * blockDim.x + threadIdx.x;
    if (segment >= segments) return;
    double a = 0.0, b = 0.0;
    for (int k = 0; k < pieces; ++k) {  // pieces in order, as the CPU combines them
        if (piece_segments[k] == segment) {
            a += partials[2 * k];
            b += partials[2 * k + 1];
        }
    }
    sums[2 * segment] = a;
    sums[2 * segment + 1] = b;
}
