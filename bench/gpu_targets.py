"""The GPU backend's targets (issue 8), measured side by side with PyTorch on the same device in one run.

    python bench/gpu_targets.py [--out DIR]     # prints the table, writes DIR/gpu-targets.{md,json}

- Bandwidth ceiling: a device-to-device copy (``cupy.copyto``) of 1 GiB, counting what it reads and writes
  (2 x 4 bytes per element; a GPU's L2 does not read a line that is wholly overwritten).
- Adam, float32, 100M parameters in one tensor: bytes it must move (reads p, g, m, v; writes p, m, v: 28 per
  parameter) against the ceiling, and against PyTorch's ``Adam(fused=True)`` on the same parameters.
- Batch norm, float32, training forward (reads x, writes y) and backward (reads x, dy, writes dx) against the
  ceiling, and forward / forward+backward against ``torch.nn.BatchNorm1d``, at several sizes.
- Dense forward+backward (ReLU, bias), (4096, 4096) x (4096, 4096) float32: fastdl's layer against the three bare
  GEMMs it needs (z = x W, dW = x^T dz, dx = dz W^T) through the same ``cupy.matmul``, and against PyTorch.
- The same layer in each GEMM precision (issue 25): float32, TF32 (``fastdl.set_float32_matmul_precision("high")``
  against PyTorch's) and bfloat16 compute (``compute_dtype="bfloat16"`` against ``torch.autocast``).

Every time is the device-synchronized wall time of a batch of calls divided by its size (what a training loop
sees, host overheads included); contenders take turns within each round and ratios are paired within rounds.
"""

import argparse
import datetime
import json
import pathlib
import statistics
import subprocess
import time

import numpy as np

import fastdl
from fastdl import optim

ADAM_PARAMETERS = 100_000_000
BATCHNORM_SIZES = [(4096, 512), (1024, 1024), (16384, 1024), (65536, 1024), (262144, 256)]
BATCHNORM_RELU_SIZES = [(16384, 1024), (65536, 1024)]  # with the fused ReLU (its own kernels since the _relu variants)
DENSE_SIDE = 4096


def rounds(calls, sync, repeat, count=7):
    """{name: [us per call in each round]}: each contender runs ``repeat`` calls between two device syncs."""
    per_round = {name: [] for name in calls}
    for _ in range(count):
        for name, call in calls.items():
            call()
            sync()
            start = time.perf_counter()
            for _ in range(repeat):
                call()
            sync()
            per_round[name].append((time.perf_counter() - start) / repeat * 1e6)
    return per_round


def median(per_round, name):
    return statistics.median(per_round[name])


def ratio(per_round, numerator, denominator):
    if numerator not in per_round or denominator not in per_round:
        return None
    return statistics.median(a / b for a, b in zip(per_round[numerator], per_round[denominator]))


def load_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def copy_ceiling(cupy, sync):
    n = 1 << 28
    a, b = cupy.empty(n, cupy.float32), cupy.ones(n, cupy.float32)
    per_round = rounds({"copy": lambda: cupy.copyto(a, b)}, sync, repeat=10)
    us = min(per_round["copy"])  # a ceiling is what the device can do
    return {"elements": n, "us": us, "GBps": 2 * 4 * n / us / 1e3}


def adam(cupy, torch, sync, ceiling):
    n = ADAM_PARAMETERS
    rng = cupy.random.default_rng(0)
    parameter = fastdl.Parameter(rng.standard_normal(n, dtype=cupy.float32) * 0.1)
    optimizer = optim.Adam([parameter], lr=1e-3)
    parameter.grad[...] = rng.standard_normal(n, dtype=cupy.float32)
    calls = {"fastdl": optimizer.step}
    narrow = fastdl.Parameter(parameter.data.copy())  # the same step with bfloat16 moments (20 bytes per parameter)
    narrow_optimizer = optim.Adam([narrow], lr=1e-3, moments_dtype="bfloat16")
    narrow.grad[...] = parameter.grad
    calls["fastdl bf16"] = narrow_optimizer.step
    if torch is not None:
        weight = torch.randn(n, device="cuda") * 0.1
        weight.grad = torch.randn(n, device="cuda")
        calls["torch"] = torch.optim.Adam([weight], lr=1e-3, fused=True).step
    per_round = rounds(calls, sync, repeat=20)
    us = median(per_round, "fastdl")
    gbps = 28 * n / us / 1e3
    bf16_us = median(per_round, "fastdl bf16")
    return {"parameters": n, "fastdl_us": us, "GBps": gbps, "of_ceiling": gbps / ceiling["GBps"],
            "torch_us": median(per_round, "torch") if "torch" in per_round else None,
            "vs_torch": ratio(per_round, "torch", "fastdl"),
            "bf16_us": bf16_us, "bf16_GBps": 20 * n / bf16_us / 1e3, "bf16_vs_torch": ratio(per_round, "torch", "fastdl bf16")}


def batchnorm(cupy, torch, sync, ceiling, rows, cols, activation="identity"):
    """BatchNorm(cols, activation=...) against BatchNorm1d (then torch.relu for "relu": two kernels there)."""
    rng = cupy.random.default_rng(1)
    x = rng.standard_normal((rows, cols), dtype=cupy.float32) * 2 + 3
    dy = rng.standard_normal((rows, cols), dtype=cupy.float32)
    bn = fastdl.BatchNorm(cols, activation=activation)
    after = (lambda t: torch.relu(t)) if activation == "relu" else (lambda t: t)

    def forward_backward():
        bn(x)
        bn.backward(dy)

    bn(x)
    calls = {"fastdl forward": lambda: bn(x), "fastdl backward": lambda: bn.backward(dy),
             "fastdl forward+backward": forward_backward}
    if torch is not None:
        layer = torch.nn.BatchNorm1d(cols).cuda()
        tx = torch.as_tensor(x, device="cuda")  # zero-copy through __cuda_array_interface__
        tx_grad = tx.detach().clone().requires_grad_(True)
        tdy = torch.as_tensor(dy, device="cuda")

        def torch_forward():
            with torch.no_grad():
                after(layer(tx))

        def torch_forward_backward():
            tx_grad.grad = None  # assign dx rather than accumulate into it, as fastdl does
            after(layer(tx_grad)).backward(tdy)

        calls["torch forward"] = torch_forward
        calls["torch forward+backward"] = torch_forward_backward
    repeat = max(5, min(200, int(2e9 / (rows * cols * 4))))
    per_round = rounds(calls, sync, repeat=repeat)
    size = rows * cols * 4
    row = {"size": f"{rows}x{cols}", "activation": activation}
    for part, bytes_moved in (("forward", 2 * size), ("backward", 3 * size), ("forward+backward", 5 * size)):
        us = median(per_round, f"fastdl {part}")
        row[part] = {"us": us, "GBps": bytes_moved / us / 1e3, "of_ceiling": bytes_moved / us / 1e3 / ceiling["GBps"],
                     "torch_us": median(per_round, f"torch {part}") if f"torch {part}" in per_round else None,
                     "vs_torch": ratio(per_round, f"torch {part}", f"fastdl {part}")}
    return row


def dense(cupy, torch, sync):
    side = DENSE_SIDE
    rng = cupy.random.default_rng(2)
    x = rng.standard_normal((side, side), dtype=cupy.float32)
    dy = rng.standard_normal((side, side), dtype=cupy.float32)
    layer = fastdl.Dense(side, side, activation="relu", seed=0)

    def fastdl_step():
        layer(x)
        layer.backward(dy)

    w = layer.weight.data
    z, dw, dx = (cupy.empty((side, side), cupy.float32) for _ in range(3))
    dz = dy.copy()

    def bare_gemms():
        cupy.matmul(x, w, out=z)
        cupy.matmul(x.T, dz, out=dw)
        cupy.matmul(dz, w.T, out=dx)

    calls = {"fastdl": fastdl_step, "bare GEMMs": bare_gemms}
    if torch is not None:
        linear = torch.nn.Linear(side, side).cuda()
        tx = torch.as_tensor(x, device="cuda").clone().requires_grad_(True)
        tdy = torch.as_tensor(dy, device="cuda")

        def torch_step():
            tx.grad = None
            linear.zero_grad(set_to_none=True)
            torch.relu(linear(tx)).backward(tdy)

        calls["torch"] = torch_step
    per_round = rounds(calls, sync, repeat=5)
    flops = 3 * 2 * side ** 3
    us = median(per_round, "fastdl")
    return {"side": side, "fastdl_us": us, "TFLOPs": flops / us / 1e6, "bare_us": median(per_round, "bare GEMMs"),
            "over_bare": ratio(per_round, "fastdl", "bare GEMMs"),
            "torch_us": median(per_round, "torch") if "torch" in per_round else None,
            "vs_torch": ratio(per_round, "torch", "fastdl")}


PRECISION_MODES = ("float32", "tf32", "bfloat16")


def dense_precisions(xp, torch, sync, side=DENSE_SIDE, repeat=5):
    """Dense fwd+bwd (ReLU) at side^3 in each mode of PRECISION_MODES, each against PyTorch in the same mode."""
    data = np.random.default_rng(3)
    x = xp.asarray(data.standard_normal((side, side)).astype(np.float32))
    dy = xp.asarray(data.standard_normal((side, side)).astype(np.float32))
    rows = []
    for mode in PRECISION_MODES:
        layer = fastdl.Dense(side, side, activation="relu", seed=0,
                             compute_dtype="bfloat16" if mode == "bfloat16" else "float32")

        def fastdl_step(layer=layer):
            layer(x)
            layer.backward(dy)

        calls = {"fastdl": fastdl_step}
        if torch is not None:
            calls["torch"] = _torch_dense_step(torch, x, dy, mode)
        precision = "high" if mode == "tf32" else "highest"  # the same name and levels in both libraries
        fastdl.set_float32_matmul_precision(precision)
        if torch is not None:
            torch.set_float32_matmul_precision(precision)
        try:
            per_round = rounds(calls, sync, repeat=repeat)
        finally:
            fastdl.set_float32_matmul_precision("highest")
            if torch is not None:
                torch.set_float32_matmul_precision("highest")
        us = median(per_round, "fastdl")
        rows.append({"mode": mode, "side": side, "fastdl_us": us, "TFLOPs": 3 * 2 * side ** 3 / us / 1e6,
                     "torch_us": median(per_round, "torch") if "torch" in per_round else None,
                     "vs_torch": ratio(per_round, "torch", "fastdl")})
    return rows


def _torch_dense_step(torch, x, dy, mode):
    side = x.shape[1]
    linear = torch.nn.Linear(side, side).cuda()
    tx = torch.as_tensor(x, device="cuda").clone().requires_grad_(True)
    tdy = torch.as_tensor(dy, device="cuda")
    if mode == "bfloat16":
        tdy = tdy.to(torch.bfloat16)  # autocast's output dtype

    def step():
        tx.grad = None
        linear.zero_grad(set_to_none=True)
        if mode == "bfloat16":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = torch.relu(linear(tx))
        else:
            out = torch.relu(linear(tx))
        out.backward(tdy)

    return step


def machine(cupy, torch):
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        gpu = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "gpu": gpu,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(), "cupy": cupy.__version__,
            "torch": torch.__version__ if torch is not None else None}


def _x(value):
    return "-" if value is None else f"{value:.2f}x"


def table(report):
    m, c = report["machine"], report["ceiling"]
    lines = [f"fastdl GPU targets, {m['date']}: {m['gpu']}, CUDA runtime {m['cuda_runtime']}, CuPy {m['cupy']}, "
             f"PyTorch {m['torch']}", "",
             f"Ceiling: device-to-device copy of {c['elements'] * 4 >> 20} MiB, {c['GBps']:.0f} GB/s (read + write).", "",
             "| target | size | fastdl | GB/s or TFLOP/s | % of copy | PyTorch | x vs PyTorch | goal |", "|---|---|---|---|---|---|---|---|"]
    a = report["adam"]
    torch_us = "-" if a["torch_us"] is None else f"{a['torch_us']:.0f} us (fused)"
    lines.append(f"| Adam step | {a['parameters'] / 1e6:.0f}M float32 | {a['fastdl_us']:.0f} us | {a['GBps']:.0f} GB/s | "
                 f"{100 * a['of_ceiling']:.0f}% | {torch_us} | {_x(a['vs_torch'])} | >= 80% and > 1x |")
    lines.append(f"| Adam step, bfloat16 moments | {a['parameters'] / 1e6:.0f}M float32 | {a['bf16_us']:.0f} us | "
                 f"{a['bf16_GBps']:.0f} GB/s | {100 * a['bf16_GBps'] / c['GBps']:.0f}% | {torch_us} | "
                 f"{_x(a['bf16_vs_torch'])} | - |")
    for row in report["batchnorm"]:
        for part in ("forward", "backward", "forward+backward"):
            r = row[part]
            torch_us = "-" if r["torch_us"] is None else f"{r['torch_us']:.1f} us"
            name = "batch norm" + (" + ReLU" if row.get("activation") == "relu" else "")
            lines.append(f"| {name} {part} | {row['size']} | {r['us']:.1f} us | {r['GBps']:.0f} GB/s | "
                         f"{100 * r['of_ceiling']:.0f}% | {torch_us} | {_x(r['vs_torch'])} | "
                         f"{'>= 70%' if part != 'forward+backward' and name == 'batch norm' else '-'} |")
    d = report["dense"]
    torch_us = "-" if d["torch_us"] is None else f"{d['torch_us'] / 1e3:.2f} ms"
    lines.append(f"| Dense fwd+bwd (ReLU) | {d['side']}^3 | {d['fastdl_us'] / 1e3:.2f} ms | {d['TFLOPs']:.1f} TFLOP/s | "
                 f"bare GEMMs {d['bare_us'] / 1e3:.2f} ms: fastdl/bare {d['over_bare']:.3f} | {torch_us} | "
                 f"{_x(d['vs_torch'])} | fastdl/bare <= 1.15 |")
    peers = {"float32": "", "tf32": " (TF32)", "bfloat16": " (autocast)"}
    for row in report.get("dense_precisions", []):
        torch_us = "-" if row["torch_us"] is None else f"{row['torch_us'] / 1e3:.2f} ms{peers[row['mode']]}"
        lines.append(f"| Dense fwd+bwd (ReLU), {row['mode']} | {row['side']}^3 | {row['fastdl_us'] / 1e3:.2f} ms | "
                     f"{row['TFLOPs']:.1f} TFLOP/s | - | {torch_us} | {_x(row['vs_torch'])} | "
                     "- |")
    lines += ["", "Times: device-synchronized wall time per call over batches of calls, median of 7 interleaved rounds; "
              "ratios paired within rounds (x vs PyTorch above 1: fastdl faster). Bytes: what the op must read and write."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    import cupy

    torch = load_torch()
    sync = cupy.cuda.Device().synchronize
    fastdl.set_backend("gpu")
    ceiling = copy_ceiling(cupy, sync)
    report = {"machine": machine(cupy, torch), "ceiling": ceiling, "adam": adam(cupy, torch, sync, ceiling)}
    cupy.get_default_memory_pool().free_all_blocks()
    report["batchnorm"] = [batchnorm(cupy, torch, sync, ceiling, *size) for size in BATCHNORM_SIZES]
    report["batchnorm"] += [batchnorm(cupy, torch, sync, ceiling, *size, activation="relu")
                            for size in BATCHNORM_RELU_SIZES]
    report["dense"] = dense(cupy, torch, sync)
    report["dense_precisions"] = dense_precisions(cupy, torch, sync)
    text = table(report)
    print(text)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-targets.md").write_text(text + "\n")
    (out / "gpu-targets.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
