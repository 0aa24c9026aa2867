"""Batch norm report: fastdl's training forward and forward+backward against the machine's copy bandwidth
at the same working-set size and against PyTorch's BatchNorm1d, measured side by side in one run.

    python bench/normalization_report.py     # prints the table, writes bench/results/cpu-batchnorm.{md,json}

Bytes counted as the issue defines them: forward reads x and writes y (2 arrays); backward reads x and dy
and writes dx (3 arrays). The ceiling is a parallel Numba copy kernel moving the same number of bytes.
"""

import datetime
import pathlib
import sys

import numpy as np
from numba import njit, prange

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import fastdl  # noqa: E402
from dense_report import torch_cells, write_results  # noqa: E402
from fastdl.bench.timing import interleaved_rounds, medians, paired  # noqa: E402

SHAPES = [(1024, 1024), (4096, 512)]


@njit(parallel=True, cache=True)
def copy_kernel(source, target):
    for i in prange(source.shape[0]):
        target[i] = source[i]


def measure(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    grad_out = rng.standard_normal(shape).astype(np.float32)
    bn = fastdl.BatchNorm(shape[1])
    flat_source, flat_target = x.reshape(-1), np.empty(x.size, np.float32)

    def forward_backward():
        bn(x)
        bn.backward(grad_out)

    calls = {"copy_us": lambda: copy_kernel(flat_source, flat_target), "fastdl_forward_us": lambda: bn(x),
             "fastdl_forward_backward_us": forward_backward}
    try:
        import torch

        reference = torch.nn.BatchNorm1d(shape[1])
        tx, tg = torch.tensor(x, requires_grad=True), torch.tensor(grad_out)

        def torch_forward():
            with torch.no_grad():
                reference(tx)

        def torch_forward_backward():
            tx.grad = None
            reference.zero_grad(set_to_none=False)
            reference(tx).backward(tg)

        calls.update(torch_forward_us=torch_forward, torch_forward_backward_us=torch_forward_backward)
    except ImportError:
        pass
    per_round = interleaved_rounds(calls)
    row = {"shape": "x".join(map(str, shape)), **medians(per_round)}
    size = x.nbytes
    row["copy_GBps"] = 2 * size / row["copy_us"] / 1e3
    row["forward_GBps"] = 2 * size / row["fastdl_forward_us"] / 1e3
    row["forward_backward_GBps"] = 5 * size / row["fastdl_forward_backward_us"] / 1e3
    # fractions of the ceiling and speed-ups, paired within each round (copy moves 2 arrays, fwd+bwd 5)
    row["forward_of_ceiling"] = paired(per_round, "copy_us", "fastdl_forward_us")
    row["forward_backward_of_ceiling"] = 2.5 * paired(per_round, "copy_us", "fastdl_forward_backward_us")
    row["torch_forward_speedup"] = paired(per_round, "torch_forward_us", "fastdl_forward_us")
    row["torch_forward_backward_speedup"] = paired(per_round, "torch_forward_backward_us", "fastdl_forward_backward_us")
    return row


def table(rows):
    lines = ["| (N, C) | copy ceiling | fastdl train fwd | % of ceiling | torch fwd | torch / fastdl | fastdl fwd+bwd "
             "| % of ceiling | torch fwd+bwd | torch / fastdl |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['copy_GBps']:.0f} GB/s | {r['fastdl_forward_us']:.0f} us ({r['forward_GBps']:.0f} GB/s) | "
            f"{100 * r['forward_of_ceiling']:.0f}% | "
            + torch_cells(r.get("torch_forward_us"), r["torch_forward_speedup"])
            + f"{r['fastdl_forward_backward_us']:.0f} us ({r['forward_backward_GBps']:.0f} GB/s) | "
            f"{100 * r['forward_backward_of_ceiling']:.0f}% | "
            + torch_cells(r.get("torch_forward_backward_us"), r["torch_forward_backward_speedup"]).rstrip())
    return "\n".join(lines)


def main():
    fastdl.set_backend("cpu")
    rows = [measure(shape) for shape in SHAPES]
    text = (f"BatchNorm training, float32, {datetime.date.today()}, threads (BLAS, Numba) = {fastdl.get_num_threads()}; "
            "ceiling = parallel copy of the same bytes (L3-resident at these sizes)\n\n" + table(rows))
    write_results("cpu-batchnorm", text, rows)


if __name__ == "__main__":
    main()
