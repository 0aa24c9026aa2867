"""Run a suite: ceilings, every case with its contenders taking turns, the ceilings again; print, save JSON, plot.

For each case the contenders are fastdl on each requested backend, PyTorch (on the CPU, or CUDA when the
GPU backend is benchmarked) where it is installed, and JAX (jit, on the CPU) for the cases that have a JAX
version, where JAX is installed. The first call of each is timed apart (it includes JIT
compilation); the rest run in interleaved rounds, and every ratio (fraction of the ceiling aside) is the median
of ratios taken within one round.
"""

import datetime
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

import fastdl
from fastdl._files import atomic_path, write_text_atomically

from . import cases as case_module
from . import ceilings
from .timing import interleaved_rounds, medians, paired

SETTINGS = {"quick": dict(rounds=3, seconds_per_call=0.04, pause=0.05),
            "full": dict(rounds=7, seconds_per_call=0.1, pause=0.2)}


def available_backends(requested=None):
    """[(name, None)] for usable backends, [(name, reason)] for the others."""
    backend = fastdl.backend
    names = requested or [name for name in backend.BACKEND_NAMES if name not in backend.EMULATED_BACKENDS]
    result = []
    for name in names:
        try:
            fastdl.backend._load(name)
            result.append((name, None))
        except (RuntimeError, ValueError) as error:
            result.append((name, str(error)))
    return result


def _torch_device(backend):
    try:
        import torch
    except ImportError:
        return None
    if backend == "gpu":
        return "cuda" if torch.cuda.is_available() else None
    return "cpu"


def cpu_model():
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _jax_available():
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def machine_description(backends):
    import numba

    info = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu_model(),
            "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "threads (BLAS, Numba)": list(fastdl.get_num_threads())}
    blas = fastdl.blas_info()
    info["blas"] = f"{blas['provider']} ({blas['version']}; {blas['threading']})" if blas["provider"] else None
    try:
        import jax

        info["jax"] = jax.__version__
    except ImportError:
        info["jax"] = None
    try:
        import torch

        info["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        info["torch"] = None
    if "gpu" in backends:
        import cupy

        properties = cupy.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = properties["name"].decode()
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
    return info


def _in_backend(backend, call):
    def run():
        with fastdl.use_backend(backend):
            return call()
    return run


def run_case(case, backends, use_torch, settings, use_jax=True):
    """Rows (one per fastdl backend) for one case."""
    calls, first_call_ms = {}, {}
    for backend in backends:
        with fastdl.use_backend(backend):
            call = case.build()
        call = _in_backend(backend, call)
        start = time.perf_counter()
        call()  # the first call compiles what it needs: timed apart, never in the rounds
        first_call_ms[backend] = (time.perf_counter() - start) * 1e3
        calls[backend] = call
    torch_names = {}
    if use_torch and case.build_torch is not None:
        for backend in backends:
            device = _torch_device(backend)
            if device is not None and device not in torch_names.values():
                calls[f"torch-{device}"] = case.build_torch(device)
                calls[f"torch-{device}"]()
                torch_names[backend] = device
            elif device is not None:
                torch_names[backend] = device
    with_jax = use_jax and case.build_jax is not None and "cpu" in backends and _jax_available()
    if with_jax:
        calls["jax"] = case.build_jax()
        calls["jax"]()  # jit compilation, outside the rounds
    per_round = interleaved_rounds(calls, **settings)
    times = medians(per_round)
    rows = []
    for backend in backends:
        device = torch_names.get(backend)
        torch_name = f"torch-{device}" if device else None
        rows.append({
            "op": case.op, "size": case.size, "backend": backend, "unit": case.unit, "us": times[backend],
            "rate": case.work / times[backend] / 1e3,  # bytes/us / 1e3 = GB/s; flops/us / 1e3 = GFLOP/s
            "first_call_ms": first_call_ms[backend],
            "vs_numpy": paired(per_round, "numpy", backend) if backend != "numpy" else None,
            "torch_device": device, "torch_us": times.get(torch_name) if torch_name else None,
            "vs_torch": paired(per_round, torch_name, backend) if torch_name else None,
            "jax_us": times["jax"] if with_jax and backend == "cpu" else None,
            "vs_jax": paired(per_round, "jax", backend) if with_jax and backend == "cpu" else None,
        })
    return rows


def run_suite(suite="quick", backends=None, use_torch=True, progress=sys.stderr, use_jax=True):
    settings = SETTINGS[suite]
    statuses = available_backends(backends)
    usable = [name for name, reason in statuses if reason is None]
    skipped = {name: reason for name, reason in statuses if reason is not None}
    if not usable:
        raise RuntimeError(f"fastdl bench: no usable backend among {[name for name, _ in statuses]}: {skipped}")
    say = (lambda text: print(text, file=progress, flush=True)) if progress else (lambda text: None)
    say("measuring the ceilings (memory bandwidth, GEMM) ...")
    before = _measure_ceilings(usable, suite)
    cases = case_module.suite(suite)
    rows = []
    started = time.perf_counter()
    for index, case in enumerate(cases, start=1):
        say(f"[{index}/{len(cases)}] {case.name}  ({time.perf_counter() - started:.0f} s)")
        rows += [(case, row) for row in run_case(case, usable, use_torch, settings, use_jax)]
    seconds = time.perf_counter() - started
    say("measuring the ceilings again ...")
    after = _measure_ceilings(usable, suite)
    measured = {device: ceilings.higher(before[device], after[device]) for device in before}
    for case, row in rows:
        ceiling = measured["gpu" if row["backend"] == "gpu" else "cpu"]
        limit = ceiling["bandwidth_GBps"] if row["unit"] == case_module.BANDWIDTH else ceiling["gemm_GFLOPs"]
        if row["unit"] == case_module.GEMM and case.compute == "bfloat16":  # where the device has a bf16 GEMM
            limit = ceiling.get("bfloat16_gemm_GFLOPs", limit)
        row["of_ceiling"] = row["rate"] / limit
    return {"suite": suite, "machine": machine_description(usable), "skipped_backends": skipped,
            "ceilings": measured, "ceilings_measured": {"before": before, "after": after}, "seconds": seconds,
            "results": [row for _, row in rows]}


def _measure_ceilings(usable, suite):
    measured = {"cpu": ceilings.cpu_ceilings(quick=suite == "quick")}
    if "gpu" in usable:
        measured["gpu"] = ceilings.gpu_ceilings(quick=suite == "quick")
    return measured


def _fmt_time(us):
    return f"{us / 1e3:.2f} ms" if us >= 1000 else f"{us:.1f} us"


TORCH_HINT = ("PyTorch is not installed: no PyTorch columns (for them: pip install torch --index-url "
              "https://download.pytorch.org/whl/cpu)")


def format_table(report):
    machine = report["machine"]
    lines = [f"fastdl bench ({report['suite']} suite), {machine['date']}: {machine['cpu']}, {machine['cores']} cores, "
             f"numpy {machine['numpy']}, numba {machine['numba']}, BLAS {machine.get('blas')}, torch {machine['torch']}"
             + (f", jax {machine['jax']}" if machine.get("jax") else "")
             + (f", GPU {machine['gpu']}" if "gpu" in machine else ""), ""]
    for device, values in report["ceilings"].items():
        lines.append(f"Ceilings ({device}): copy {values['copy_GBps']:.1f} GB/s, triad {values['triad_GBps']:.1f} GB/s "
                     f"({'bus traffic incl. write-allocate' if values.get('write_allocate', True) else 'read + write'}; STREAM copy {values['stream_copy_GBps']:.1f} GB/s), GEMM {values['gemm_GFLOPs']:.0f} GFLOP/s (float32, {values['gemm_side']}^3)"
                     + (f", {values['bfloat16_gemm_GFLOPs']:.0f} GFLOP/s (bfloat16 operands, float32 sums)"
                        if "bfloat16_gemm_GFLOPs" in values else "")
                     + (f", {values['tf32_gemm_GFLOPs']:.0f} GFLOP/s (TF32, fastdl.set_float32_matmul_precision"
                        "('high'))" if "tf32_gemm_GFLOPs" in values else ""))
        twice = report.get("ceilings_measured")
        if twice:
            before, after = twice["before"][device], twice["after"][device]
            lines.append(f"Each the higher of two measurements, before and after the cases: GEMM "
                         f"{before['gemm_GFLOPs']:.0f} and {after['gemm_GFLOPs']:.0f} GFLOP/s, bandwidth "
                         f"{before['bandwidth_GBps']:.1f} and {after['bandwidth_GBps']:.1f} GB/s.")
    for name, reason in report["skipped_backends"].items():
        lines.append(f"Backend {name} not run: {reason}")
    with_jax = any(row.get("jax_us") for row in report["results"])
    with_torch = any(row.get("torch_us") for row in report["results"])
    if not with_torch:
        lines.append(TORCH_HINT)
    columns = ["op", "size", "backend", "time", "rate", "% of ceiling", "x vs numpy"]
    columns += ["PyTorch", "x vs PyTorch"] * with_torch + ["JAX", "x vs JAX"] * with_jax + ["first call"]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in report["results"]:
        cells = [row["op"], row["size"], row["backend"], _fmt_time(row["us"]), f"{row['rate']:.1f} {row['unit']}",
                 f"{100 * row['of_ceiling']:.0f}%", f"{row['vs_numpy']:.1f}x" if row["vs_numpy"] else "-"]
        if with_torch:
            cells += [_fmt_time(row["torch_us"]), f"{row['vs_torch']:.2f}x"] if row.get("torch_us") else ["-", "-"]
        if with_jax:
            cells += [_fmt_time(row["jax_us"]), f"{row['vs_jax']:.2f}x"] if row.get("jax_us") else ["-", "-"]
        lines.append("| " + " | ".join(cells + [f"{row['first_call_ms']:.0f} ms"]) + " |")
    lines += ["", "% of ceiling: bandwidth-bound ops (bytes the op must read and write) against the larger of copy and "
              "triad over arrays far beyond the caches (a small, cache-resident op can exceed 100%); GEMM-bound ops against the BLAS GEMM "
              "(those computing in bfloat16 against the bfloat16 GEMM, where one is installed). "
              "x vs numpy / PyTorch: their time over fastdl's, paired within rounds (above 1: fastdl faster)."]
    return "\n".join(lines)


def plot(report, path):
    """Bar charts of % of ceiling and (when PyTorch ran) speed-up vs PyTorch, for fastdl's first non-numpy backend.
    Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backend = next((b for b in ("gpu", "cpu") if any(r["backend"] == b for r in report["results"])), "numpy")
    rows = [r for r in report["results"] if r["backend"] == backend]
    labels = [f"{r['op']} [{r['size']}]" for r in rows]
    with_torch = any(r.get("torch_us") for r in rows)
    figure, axes = plt.subplots(1, 1 + with_torch, figsize=(7 + 7 * with_torch, 0.28 * len(rows) + 1.5), sharey=True,
                                squeeze=False)
    left = axes[0, 0]
    positions = np.arange(len(rows))
    left.barh(positions, [100 * r["of_ceiling"] for r in rows], color="tab:blue")
    left.set_yticks(positions, labels, fontsize=7)
    left.invert_yaxis()
    left.set_xlabel("% of the machine's ceiling (bandwidth or GEMM)")
    if with_torch:
        _speedup_panel(axes[0, 1], positions, rows)
    figure.suptitle(f"fastdl {backend} backend, {report['machine']['cpu']}, {report['machine']['date'][:10]}")
    figure.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary, dpi=110)
    finally:
        plt.close(figure)


def _speedup_panel(right, positions, rows):
    speedups = [r["vs_torch"] or 0 for r in rows]
    right.barh(positions, speedups, color=["tab:green" if s >= 1 else "tab:red" for s in speedups])
    right.axvline(1.0, color="black", linewidth=0.8)
    right.set_xscale("log")
    right.set_xlabel("speed-up vs PyTorch (log; 0 = no PyTorch equivalent)")


def save(report, folder, stem):
    """Write <stem>.json, <stem>.md and (with matplotlib) <stem>.png; return the paths written."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".json", json.dumps(report, indent=2) + "\n"), (".md", format_table(report) + "\n")):
        write_text_atomically(folder / (stem + suffix), text)
        written.append(folder / (stem + suffix))
    try:
        plot(report, folder / (stem + ".png"))
        written.append(folder / (stem + ".png"))
    except ImportError:
        print("fastdl bench: matplotlib is not installed, no plot (pip install matplotlib)", file=sys.stderr)
    return written


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="fastdl bench", description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("quick", "full"), default="quick")
    parser.add_argument("--backend", help="comma-separated backends (default: all available)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparisons")
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX comparisons")
    parser.add_argument("--out", default="fastdl-bench-results", help="folder for the JSON, table and plot")
    args = parser.parse_args(argv)
    backends = [name.strip() for name in args.backend.split(",")] if args.backend else None
    report = run_suite(args.suite, backends, use_torch=not args.no_torch, use_jax=not args.no_jax)
    print(format_table(report))
    stem = "-".join(sorted({row["backend"] for row in report["results"]})) + f"-{args.suite}"
    for path in save(report, args.out, stem):
        print(f"wrote {path}")
    return 0
