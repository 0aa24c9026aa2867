"""CPU engine report: the layer path against compile_step, PyTorch and JAX, and fastdl's GEMMs against the BLAS
provider's own, measured side by side in one process per provider.

    python bench/engine_report.py            # every provider installed; writes bench/results/cpu-engine.{md,json}
    python bench/engine_report.py --provider openblas --out /tmp/one.json   # one provider, one process

MLP training steps (forward, softmax cross-entropy, backward, Adam): fastdl's ``compile_step`` and its layer path
(``model(x)``, the loss, ``model.backward``, ``optimizer.step()``), PyTorch eager with fused Adam, and JAX (jit,
donated state) where it is installed. GEMMs: a Dense layer with no bias and the identity (its forward is the GEMM
alone, split over fastdl's pool) against one direct ``cblas_sgemm`` call to the provider on the same shapes,
threaded by the provider itself. Medians over interleaved rounds; ratios paired within rounds.
"""

import argparse
import ctypes
import datetime
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

import fastdl
from fastdl.bench import cases
from fastdl.bench.runner import cpu_model
from fastdl.bench.timing import interleaved_rounds, medians, paired

RESULTS = pathlib.Path(__file__).parent / "results"
MLP_CASES = [([64, 64, 64, 10], 32, False), ([64, 64, 64, 10], 32, True), ([256, 256, 10], 128, False),
             ([784, 1024, 1024, 10], 256, False), ([784, 1024, 1024, 10], 256, True)]
GEMM_SHAPES = [(256, 1024, 1024), (256, 784, 1024), (128, 256, 256), (2048, 2048, 2048)]
SETTINGS = dict(rounds=7, seconds_per_call=0.15, pause=0.2)


def _torch_step(sizes, batch, batchnorm):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(fastdl.get_num_threads()[1])
    case = cases.mlp_step_case(sizes, batch, batchnorm, quick=False)
    return case.build_torch("cpu")


def _jax_step(sizes, batch, batchnorm):
    try:
        import jax  # noqa: F401
    except ImportError:
        return None
    return cases.jax_mlp_step(sizes, batch, batchnorm)


def mlp_rows():
    rows = []
    for sizes, batch, batchnorm in MLP_CASES:
        calls = {path: cases.mlp_step_case(sizes, batch, batchnorm, quick=False, path=path).build()
                 for path in cases.STEP_PATHS}
        for name, build in (("torch", _torch_step), ("jax", _jax_step)):
            call = build(sizes, batch, batchnorm)
            if call is not None:
                calls[name] = call
        for call in calls.values():
            call()  # compilation, outside the rounds
        per_round = interleaved_rounds(calls, **SETTINGS)
        times = medians(per_round)
        row = {"model": f"{'-'.join(map(str, sizes))}{' BN' if batchnorm else ''}, batch {batch}",
               "us": times, "layer_over_step": paired(per_round, "layer path", "compile_step")}
        for peer in ("torch", "jax"):
            for path in cases.STEP_PATHS:
                row[f"{peer} / {path}"] = paired(per_round, peer, path)
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    return rows


def _direct_sgemm():
    """The provider's own cblas_sgemm through ctypes: one call, threaded by the provider."""
    from fastdl.kernels.cpu.blas_provider import PROVIDER

    integer = ctypes.c_int64 if PROVIDER.integer_bits == 64 else ctypes.c_int32
    sgemm = PROVIDER.sgemm
    sgemm.argtypes = [ctypes.c_int] * 3 + [integer] * 3 + [ctypes.c_float, ctypes.c_void_p, integer,
                                                           ctypes.c_void_p, integer, ctypes.c_float, ctypes.c_void_p,
                                                           integer]

    def matmul(a, b, out):
        m, k = a.shape
        n = b.shape[1]
        sgemm(101, 111, 111, m, n, k, 1.0, a.ctypes.data, k, b.ctypes.data, n, 0.0, out.ctypes.data, n)
    return matmul


def gemm_rows():
    matmul = _direct_sgemm()
    rows = []
    for m, k, n in GEMM_SHAPES:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((m, k)).astype(np.float32)
        layer = fastdl.Dense(k, n, bias=False, seed=0)
        weight = np.ascontiguousarray(layer.weight.data)
        out = np.empty((m, n), np.float32)
        matmul(x, weight, out)
        np.testing.assert_allclose(layer(x), out, rtol=1e-4, atol=1e-3)
        per_round = interleaved_rounds({"fastdl": lambda: layer(x), "provider": lambda: matmul(x, weight, out)},
                                       **SETTINGS)
        times = medians(per_round)
        flops = 2 * m * k * n
        rows.append({"shape": f"{m}x{k}x{n}", "fastdl_us": times["fastdl"], "provider_us": times["provider"],
                     "fastdl_GFLOPs": flops / times["fastdl"] / 1e3, "provider_GFLOPs": flops / times["provider"] / 1e3,
                     "provider_over_fastdl": paired(per_round, "provider", "fastdl")})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def measure_one():
    versions = {"numpy": np.__version__}
    for name in ("numba", "torch", "jax"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"blas": fastdl.blas_info(), "versions": versions, "mlp": mlp_rows(), "gemm": gemm_rows()}


def format_markdown(report):
    lines = [f"# CPU engine report, {report['date']}", "",
             f"{report['cpu']}, {os.cpu_count()} cores. `python bench/engine_report.py`: medians over "
             f"{SETTINGS['rounds']} interleaved rounds, ratios paired within rounds (above 1: the second named is "
             "slower).", ""]
    for run in report["providers"]:
        blas = run["blas"]
        lines += [f"## Provider: {blas['provider']} ({blas['version']})", "",
                  f"Threading: {blas['threading']}; Numba {run['versions']['numba']} "
                  f"({blas['numba_threading_layer']}, {blas['numba_threads']} threads); "
                  f"torch {run['versions']['torch']}; jax {run['versions']['jax']}.", "",
                  "| model (Adam) | compile_step | layer path | layer / step | PyTorch eager | PyTorch / step | "
                  "PyTorch / layer | JAX jit | JAX / step |", "|---|---|---|---|---|---|---|---|---|"]
        for row in run["mlp"]:
            us = row["us"]

            def cell(name):
                return f"{us[name] / 1e3:.2f} ms" if us.get(name, 0) >= 1000 else (
                    f"{us[name]:.0f} us" if name in us else "-")

            def ratio(key):
                return f"{row[key]:.2f}x" if row.get(key) else "-"
            lines.append(f"| {row['model']} | {cell('compile_step')} | {cell('layer path')} | "
                         f"{row['layer_over_step']:.2f} | {cell('torch')} | {ratio('torch / compile_step')} | "
                         f"{ratio('torch / layer path')} | {cell('jax')} | {ratio('jax / compile_step')} |")
        lines += ["", "| GEMM (float32, m x k x n) | fastdl Dense (no bias, identity) | provider's cblas_sgemm | "
                  "provider / fastdl |", "|---|---|---|---|"]
        for row in run["gemm"]:
            lines.append(f"| {row['shape']} | {row['fastdl_us'] / 1e3:.2f} ms, {row['fastdl_GFLOPs']:.0f} GFLOP/s | "
                         f"{row['provider_us'] / 1e3:.2f} ms, {row['provider_GFLOPs']:.0f} GFLOP/s | "
                         f"{row['provider_over_fastdl']:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("openblas", "mkl"), help="measure one provider in this process")
    parser.add_argument("--out", help="with --provider: where to write that run's JSON")
    args = parser.parse_args(argv)
    if args.provider:
        result = measure_one()
        if result["blas"]["provider"] != args.provider:
            raise SystemExit(f"asked for {args.provider}, got {result['blas']['provider']} (see the warning above)")
        pathlib.Path(args.out).write_text(json.dumps(result, indent=2))
        return 0
    from fastdl.kernels.cpu.blas_provider import _mkl_paths

    providers = ["openblas"] + (["mkl"] if _mkl_paths() else [])
    runs = []
    for provider in providers:
        out = RESULTS / f".engine-{provider}.json"
        subprocess.run([sys.executable, __file__, "--provider", provider, "--out", str(out)], check=True,
                       env={**os.environ, "FASTDL_BLAS": provider})
        runs.append(json.loads(out.read_text()))
        out.unlink()
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu_model(),
              "providers": runs}
    (RESULTS / "cpu-engine.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "cpu-engine.md").write_text(format_markdown(report))
    print(format_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
