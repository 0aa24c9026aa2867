"""Launchers for dropout.cu: the signatures of the CPU backend's dropout functions, on CuPy arrays."""

import numpy as np

from .launch import THREADS, blocks, kernel


def dropout_forward(x, p, seed, counter, mask_out, y_out):
    n = x.size
    scale = x.dtype.type(1.0 / (1.0 - p))
    kernel("dropout.cu", "dropout_forward", x.dtype, like=x)(
        blocks(n), (THREADS,), (x, np.int64(n), np.float64(p), scale, np.uint64(seed), np.uint64(counter), mask_out,
                                y_out))


def dropout_backward(grad_y, mask, p, grad_x):
    n = grad_y.size
    kernel("dropout.cu", "dropout_backward", grad_y.dtype, like=grad_y)(
        blocks(n), (THREADS,), (grad_y, mask, np.int64(n), grad_y.dtype.type(1.0 / (1.0 - p)), grad_x))
