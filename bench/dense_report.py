"""Dense layer report: fastdl against the bare BLAS GEMMs and PyTorch, measured side by side in one run.

    python bench/dense_report.py            # prints the table, writes bench/results/cpu-dense.{md,json}

Forward is compared with one bare GEMM (x @ W into a preallocated output) and with PyTorch's
``relu(linear(x))`` under ``no_grad``; forward+backward with three bare GEMMs (x @ W, x.T @ dZ, dZ @ W.T)
and with PyTorch autograd. Times are medians of interleaved rounds (see ``interleaved_medians``); GFLOP/s count the GEMM flops.
"""

import datetime
import json
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import fastdl  # noqa: E402
from shapes import DENSE_SHAPES, dense_case, gemm_flops  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"


def interleaved_medians(calls, rounds=5, seconds_per_call=0.15):
    """Median time of each callable, measured in interleaved rounds so slow drifts of a shared host hit every
    contender alike; the result is the median over rounds of each round's median."""
    per_round = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            # Let the pools of whatever ran before (BLAS, PyTorch's OpenMP) stop spinning: a pool still
            # spinning on the other core halves the next library's GEMM on these 2 cores.
            time.sleep(0.2)
            for _ in range(3):
                call()
            samples, start = [], time.perf_counter()
            while time.perf_counter() - start < seconds_per_call or len(samples) < 5:
                t0 = time.perf_counter()
                call()
                samples.append(time.perf_counter() - t0)
            per_round[name].append(statistics.median(samples))
    return {name: statistics.median(values) * 1e6 for name, values in per_round.items()}


def torch_calls(shape):
    try:
        import torch
    except ImportError:
        return None, None
    linear = torch.nn.Linear(shape[1], shape[2])
    # requires_grad on x: PyTorch then computes dX too, the same three GEMMs fastdl's backward does.
    x, grad_out = torch.randn(shape[0], shape[1], requires_grad=True), torch.randn(shape[0], shape[2])

    def forward():
        with torch.no_grad():
            torch.relu(linear(x))

    def forward_backward():
        linear.zero_grad(set_to_none=False)
        x.grad = None
        torch.relu(linear(x)).backward(grad_out)

    return forward, forward_backward


def measure(shape):
    layer, x, grad_out = dense_case(shape)
    weight = layer.weight.data
    y, grad_z = np.empty((shape[0], shape[2]), np.float32), grad_out.copy()
    grad_w, grad_x = np.empty_like(weight), np.empty_like(x)

    def bare_three_gemms():
        np.matmul(x, weight, out=y)
        np.matmul(x.T, grad_z, out=grad_w)
        np.matmul(grad_z, weight.T, out=grad_x)

    def fastdl_forward_backward():
        layer(x)
        layer.backward(grad_out)

    calls = {"gemm_us": lambda: np.matmul(x, weight, out=y), "fastdl_forward_us": lambda: layer(x),
             "gemm3_us": bare_three_gemms, "fastdl_forward_backward_us": fastdl_forward_backward}
    torch_forward, torch_forward_backward = torch_calls(shape)
    if torch_forward is not None:
        calls.update(torch_forward_us=torch_forward, torch_forward_backward_us=torch_forward_backward)
    row = {"shape": "x".join(map(str, shape)), **interleaved_medians(calls)}
    row["fastdl_forward_gflops"] = gemm_flops(shape) / row["fastdl_forward_us"] / 1e3
    return row


def table(rows):
    lines = ["| shape (batch x in x out) | bare GEMM | fastdl fwd | fwd / GEMM | torch fwd | torch / fastdl "
             "| 3 bare GEMMs | fastdl fwd+bwd | fwd+bwd / 3 GEMMs | torch fwd+bwd | torch / fastdl |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        torch_f = r.get("torch_forward_us")
        torch_fb = r.get("torch_forward_backward_us")
        lines.append(
            f"| {r['shape']} | {r['gemm_us']:.1f} us | {r['fastdl_forward_us']:.1f} us "
            f"({r['fastdl_forward_gflops']:.0f} GFLOP/s) | {r['fastdl_forward_us'] / r['gemm_us']:.3f}x | "
            + (f"{torch_f:.1f} us | {torch_f / r['fastdl_forward_us']:.2f}x | " if torch_f else "- | - | ")
            + f"{r['gemm3_us']:.1f} us | {r['fastdl_forward_backward_us']:.1f} us | "
            f"{r['fastdl_forward_backward_us'] / r['gemm3_us']:.3f}x | "
            + (f"{torch_fb:.1f} us | {torch_fb / r['fastdl_forward_backward_us']:.2f}x |" if torch_fb else "- | - |"))
    return "\n".join(lines)


def main():
    fastdl.set_backend("cpu")
    rows = [measure(shape) for shape in DENSE_SHAPES]
    machine = f"{platform.processor() or platform.machine()}, {fastdl.get_num_threads()} (BLAS, Numba) threads"
    try:
        import torch
        machine += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        machine += ", torch not installed"
    header = (f"Dense + ReLU, float32, {datetime.date.today()}, {machine}, numpy {np.__version__} "
              f"(OpenBLAS GEMMs)\n\n")
    text = header + table(rows)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu-dense.md").write_text(text + "\n")
    (RESULTS / "cpu-dense.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
