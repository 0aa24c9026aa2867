"""Dense layer report: fastdl against the bare BLAS GEMMs and PyTorch, measured side by side in one run.

    python bench/dense_report.py            # prints the table, writes bench/results/cpu-dense.{md,json}

Forward is compared with one bare GEMM (x @ W into a preallocated output) and with PyTorch's
``relu(linear(x))`` under ``no_grad``; forward+backward with three bare GEMMs (x @ W, x.T @ dZ, dZ @ W.T)
and with PyTorch autograd. Times are medians over interleaved rounds; ratios are paired within each round (see ``interleaved_rounds``); GFLOP/s count the GEMM flops.
"""

import datetime
import json
import pathlib
import platform
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import fastdl  # noqa: E402
from fastdl.bench.timing import interleaved_rounds, medians, paired  # noqa: E402,F401 (re-exported)
from shapes import DENSE_SHAPES, dense_case, gemm_flops  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"


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
    per_round = interleaved_rounds(calls)
    row = {"shape": "x".join(map(str, shape)), **medians(per_round),
           "forward_over_gemm": paired(per_round, "fastdl_forward_us", "gemm_us"),
           "forward_backward_over_gemm3": paired(per_round, "fastdl_forward_backward_us", "gemm3_us"),
           "torch_forward_speedup": paired(per_round, "torch_forward_us", "fastdl_forward_us"),
           "torch_forward_backward_speedup": paired(per_round, "torch_forward_backward_us", "fastdl_forward_backward_us")}
    row["fastdl_forward_gflops"] = gemm_flops(shape) / row["fastdl_forward_us"] / 1e3
    return row


def torch_cells(torch_us, speedup):
    """'time | speed-up of fastdl' table cells for a PyTorch timing, or dashes where torch is not installed."""
    return f"{torch_us:.1f} us | {speedup:.2f}x | " if torch_us else "- | - | "


def write_results(name, text, data):
    """Print the table and save it as bench/results/<name>.md and .json."""
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def table(rows):
    lines = ["| shape (batch x in x out) | bare GEMM | fastdl fwd | fwd / GEMM | torch fwd | torch / fastdl "
             "| 3 bare GEMMs | fastdl fwd+bwd | fwd+bwd / 3 GEMMs | torch fwd+bwd | torch / fastdl |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['gemm_us']:.1f} us | {r['fastdl_forward_us']:.1f} us "
            f"({r['fastdl_forward_gflops']:.0f} GFLOP/s) | {r['forward_over_gemm']:.3f}x | "
            + torch_cells(r.get("torch_forward_us"), r["torch_forward_speedup"])
            + f"{r['gemm3_us']:.1f} us | {r['fastdl_forward_backward_us']:.1f} us | "
            f"{r['forward_backward_over_gemm3']:.3f}x | "
            + torch_cells(r.get("torch_forward_backward_us"), r["torch_forward_backward_speedup"]).rstrip())
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
    write_results("cpu-dense", header + table(rows), {"machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
