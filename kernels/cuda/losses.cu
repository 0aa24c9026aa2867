// Losses with their gradients in one pass, as kernels/cpu/losses.py computes them (float64 sums): each block
// writes its part of the loss to `partials` and fastdl_sum_doubles (activations.cu) adds them in a fixed order.
//   softmax cross-entropy: one block per row (max, sum of exp, loss term and gradient with label smoothing)
//   MSE and BCE-with-logits: grid-stride over the elements, one partial per block
#include "common.cuh"

template <typename T>
__device__ void softmax_cross_entropy(const T* logits, const long long* labels, long long classes,
                                      double label_smoothing, double scale, T* grad, double* partials) {
    __shared__ double shared[32];
    long long base = blockIdx.x * classes;
    double largest = -fastdl_infinity();
    for (long long j = threadIdx.x; j < classes; j += blockDim.x) largest = max(largest, (double)logits[base + j]);
    T row_max = T(fastdl_block_reduce(largest, -fastdl_infinity(), shared, FastdlMax()));
    double sum_exp = 0.0, sum_shifted = 0.0;
    for (long long j = threadIdx.x; j < classes; j += blockDim.x) {
        double shifted = (double)(logits[base + j] - row_max);
        double e = exp(shifted);
        grad[base + j] = T(e);
        sum_exp += e;
        sum_shifted += shifted;
    }
    sum_exp = fastdl_block_reduce(sum_exp, 0.0, shared, FastdlAdd());
    sum_shifted = fastdl_block_reduce(sum_shifted, 0.0, shared, FastdlAdd());
    double log_sum = log(sum_exp), off_target = label_smoothing / (double)classes, inverse = 1.0 / sum_exp;
    // a label out of range makes this row's loss NaN (never an index): the host then names the labels, with the
    // one copy of the loss it makes anyway, instead of reading their minimum and maximum first
    long long label = labels[blockIdx.x];
    bool valid = label >= 0 && label < classes;
    for (long long j = threadIdx.x; j < classes; j += blockDim.x) {
        double g = ((double)grad[base + j] * inverse - off_target) * scale;
        if (valid && j == label) g -= (1.0 - label_smoothing) * scale;
        grad[base + j] = T(g);
    }
    if (threadIdx.x == 0) {
        double target_shifted = valid ? (double)(logits[base + label] - row_max) : fastdl_quiet_nan();
        partials[blockIdx.x] = ((1.0 - label_smoothing) * (log_sum - target_shifted) +
                                off_target * ((double)classes * log_sum - sum_shifted)) * scale;
    }
}

template <typename T>
__device__ void mse(const T* pred, const T* target, long long n, double scale, T* grad, double* partials) {
    __shared__ double shared[32];
    double sum = 0.0;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += (long long)blockDim.x * gridDim.x) {
        T diff = pred[k] - target[k];
        sum += (double)diff * (double)diff;
        grad[k] = T(2.0 * scale) * diff;
    }
    sum = fastdl_block_reduce(sum, 0.0, shared, FastdlAdd());
    if (threadIdx.x == 0) partials[blockIdx.x] = sum * scale;
}

template <typename T>
__device__ void bce_with_logits(const T* logits, const T* targets, long long n, double scale, T* grad,
                                double* partials) {
    __shared__ double shared[32];
    double sum = 0.0;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += (long long)blockDim.x * gridDim.x) {
        double z = (double)logits[k], t = (double)targets[k];
        sum += max(z, 0.0) + log1p(exp(-fabs(z))) - t * z;
        double s = z >= 0.0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
        grad[k] = T((s - t) * scale);
    }
    sum = fastdl_block_reduce(sum, 0.0, shared, FastdlAdd());
    if (threadIdx.x == 0) partials[blockIdx.x] = sum * scale;
}

#define FASTDL_LOSS_KERNELS(T, S)                                                                                    \
    extern "C" __global__ void fastdl_softmax_cross_entropy_##S(const T* logits, const long long* labels,            \
                                                                long long classes, double label_smoothing,           \
                                                                double scale, T* grad, double* partials) {           \
        softmax_cross_entropy(logits, labels, classes, label_smoothing, scale, grad, partials);                     \
    }                                                                                                                \
    extern "C" __global__ void fastdl_mse_##S(const T* pred, const T* target, long long n, double scale, T* grad,    \
                                              double* partials) {                                                    \
        mse(pred, target, n, scale, grad, partials);                                                                 \
    }                                                                                                                \
    extern "C" __global__ void fastdl_bce_with_logits_##S(const T* logits, const T* targets, long long n,            \
                                                          double scale, T* grad, double* partials) {                 \
        bce_with_logits(logits, targets, n, scale, grad, partials);                                                  \
    }

FASTDL_LOSS_KERNELS(float, f32)
FASTDL_LOSS_KERNELS(double, f64)
