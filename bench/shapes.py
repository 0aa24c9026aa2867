"""Shared setup for the dense benchmarks: the sizes the foundation issue asks about, and their inputs."""

import numpy as np

import fastdl

# (batch, in_features, out_features)
DENSE_SHAPES = [(256, 784, 1024), (256, 1024, 1024), (32, 64, 64)]


def dense_case(shape, dtype=np.float32, activation="relu"):
    batch, fan_in, fan_out = shape
    rng = np.random.default_rng(0)
    layer = fastdl.Dense(fan_in, fan_out, activation=activation, seed=0, dtype=dtype)
    x = rng.standard_normal((batch, fan_in)).astype(dtype)
    grad_out = rng.standard_normal((batch, fan_out)).astype(dtype)
    return layer, x, grad_out


def gemm_flops(shape):
    batch, fan_in, fan_out = shape
    return 2 * batch * fan_in * fan_out
