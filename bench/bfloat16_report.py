"""bfloat16 compute report: the bfloat16 GEMM against the float32 one, and MLP training steps with the Dense layers
in bfloat16 against float32 and against PyTorch's autocast, side by side in one process.

    python bench/bfloat16_report.py          # writes bench/results/cpu-bfloat16.{md,json}

GEMMs: fastdl's bfloat16 GEMM provider (``fastdl.blas_info()["bfloat16_gemm"]``, oneDNN's
``dnnl_gemm_bf16bf16f32``) called directly on bfloat16 operands, against a fastdl ``Dense`` layer computing in
bfloat16 with no bias and the identity (its forward: x and the weight rounded to bfloat16, then the provider's GEMM)
and against numpy's float32 matmul on the same shapes.
Steps: 784-1024-1024-10 at batch 256 with Adam, with and without batch norm, through ``compile_step`` and the layer
path; PyTorch eager with fused Adam, in float32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)``. Medians
of interleaved rounds.
"""

import datetime
import json
import os
import pathlib
import sys
import warnings

import numpy as np

import fastdl
from fastdl.bench import cases
from fastdl.bench.runner import cpu_model
from fastdl.bench.timing import interleaved_rounds, medians
from fastdl.kernels import bfloat16

RESULTS = pathlib.Path(__file__).parent / "results"
GEMM_SHAPES = [(256, 1024, 1024), (256, 784, 1024), (2048, 2048, 2048), (64, 256, 256), (32, 128, 128), (32, 64, 64)]


def gemm_rows(rounds):
    from fastdl.kernels.cpu import bfloat16_gemm

    if not bfloat16_gemm.AVAILABLE:
        return []
    rows = []
    for m, k, n in GEMM_SHAPES:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
        a_bits, b_bits = (bfloat16.round_nearest(v).view(np.uint32) >> np.uint32(16) for v in (a, b))
        a_bits, b_bits = a_bits.astype(np.uint16), b_bits.astype(np.uint16)
        out = np.empty((m, n), np.float32)
        layer = fastdl.Dense(k, n, bias=False, compute_dtype="bfloat16")
        layer.weight.data[...] = b
        calls = {"bfloat16 (oneDNN)": lambda: bfloat16_gemm.matmul_bits(a_bits, b_bits, out),
                 "fastdl Dense (bfloat16)": lambda: layer(a),
                 "float32 (numpy)": lambda: np.matmul(a, b, out=out)}
        times = medians(interleaved_rounds(calls, rounds=rounds, seconds_per_call=0.2))
        rows.append({"shape": f"{m}x{k}x{n}", **{name: 2 * m * n * k / us / 1e3 for name, us in times.items()}})
    return rows


def step_rows(rounds):
    import torch

    torch.set_num_threads(fastdl.get_num_threads()[1])
    rows = []
    for batchnorm in (False, True):
        for path in cases.STEP_PATHS:
            calls = {}
            for compute in ("float32", "bfloat16"):
                case = cases.mlp_step_case([784, 1024, 1024, 10], 256, batchnorm, quick=False, path=path,
                                           compute=compute)
                calls[f"fastdl {compute}"] = case.build()
                calls[f"PyTorch {'autocast bfloat16' if compute == 'bfloat16' else 'float32'}"] = case.build_torch(
                    "cpu")
            times = medians(interleaved_rounds(calls, rounds=rounds, seconds_per_call=0.3))
            rows.append({"model": f"784-1024-1024-10{' + BN' if batchnorm else ''}", "path": path,
                         **{name: us / 1e3 for name, us in times.items()}})
    return rows


def markdown(report):
    lines = [f"# bfloat16 compute on the CPU ({report['date']})", "",
             f"{report['cpu']}; bfloat16 GEMM: {report['bfloat16_gemm']}; float32 GEMM: {report['blas']}.", "",
             "## GEMM (GFLOP/s)", "",
             "| shape | bfloat16 (oneDNN's own call) | fastdl Dense, bfloat16 (rounding x and W, then the GEMM) | "
             "Dense / oneDNN | float32 (numpy) | oneDNN / float32 |", "|---|---|---|---|---|---|"]
    for row in report["gemm"]:
        lines.append(f"| {row['shape']} | {row['bfloat16 (oneDNN)']:.0f} | {row['fastdl Dense (bfloat16)']:.0f} | "
                     f"{row['fastdl Dense (bfloat16)'] / row['bfloat16 (oneDNN)']:.2f} | "
                     f"{row['float32 (numpy)']:.0f} | {row['bfloat16 (oneDNN)'] / row['float32 (numpy)']:.2f}x |")
    lines += ["", "## Training step, batch 256, Adam (ms)", "",
              "| model | path | fastdl float32 | fastdl bfloat16 | PyTorch float32 | PyTorch autocast bfloat16 | "
              "fastdl bf16 vs autocast |", "|---|---|---|---|---|---|---|"]
    for row in report["steps"]:
        lines.append(f"| {row['model']} | {row['path']} | {row['fastdl float32']:.2f} | {row['fastdl bfloat16']:.2f} | "
                     f"{row['PyTorch float32']:.2f} | {row['PyTorch autocast bfloat16']:.2f} | "
                     f"{row['PyTorch autocast bfloat16'] / row['fastdl bfloat16']:.2f}x |")
    lines += ["", f"Medians of {report['rounds']} interleaved rounds (ratios above 1: fastdl faster)."]
    return "\n".join(lines) + "\n"


def main():
    warnings.simplefilter("ignore", fastdl.BFloat16Notice)
    fastdl.set_backend("cpu")
    info = fastdl.blas_info()
    rounds = 7
    report = {"date": datetime.date.today().isoformat(), "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
              "bfloat16_gemm": info["bfloat16_gemm"], "blas": info["provider"], "rounds": rounds,
              "gemm": gemm_rows(rounds), "steps": step_rows(rounds)}
    text = markdown(report)
    sys.stdout.write(text)
    (RESULTS / "cpu-bfloat16.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / "cpu-bfloat16.md").write_text(text)


if __name__ == "__main__":
    main()
