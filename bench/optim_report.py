"""Optimizer step report: fastdl's fused steps against the memory ceiling and PyTorch's best CPU optimizers.

    python bench/optim_report.py            # prints the table, writes bench/results/cpu-optim.{md,json}

10M float32 parameters, as one tensor and as 50 tensors (25 weight matrices and 25 biases), and the 8.9k of a
small MLP, where the cost per call shows (the ceiling kernel there runs in cache). The ceiling is a
trivial parallel Numba kernel with Adam's memory traffic (reads p, g, m, v, writes p, m, v: 28 bytes per
parameter); every step's GB/s counts the bytes its algorithm must move (below) and is shown as a fraction of
the ceiling's GB/s. PyTorch runs its best CPU variant: ``fused=True`` where it exists (Adam, AdamW, SGD,
Adagrad), else ``foreach=True`` (RMSprop); clipping there is ``clip_grad_norm_(foreach=True)`` before the step.
Times are medians over interleaved rounds, ratios paired within each round (see ``dense_report``).
"""

import datetime
import pathlib
import platform
import sys

import numpy as np
from numba import njit, prange

sys.path.insert(0, str(pathlib.Path(__file__).parent))

import fastdl  # noqa: E402
from dense_report import write_results  # noqa: E402
from fastdl.bench.timing import interleaved_rounds, medians, paired  # noqa: E402
from fastdl import optim  # noqa: E402

TOTAL = 10_000_000
# Two layouts of 10M parameters (memory bound), and a small MLP 64-64-64-10 (8.9k: per-call overhead dominates).
LAYOUTS = {"1 x 10M": [(TOTAL,)], "50 tensors": [(632, 632), (576,)] * 25,
           "MLP 64-64-64-10": [(64, 64), (64,), (64, 64), (64,), (64, 10), (10,)]}

# name: (fastdl class and arguments, PyTorch class and arguments or None, bytes moved per float32 parameter)
CASES = {
    "SGD momentum": ((optim.SGD, dict(lr=0.01, momentum=0.9)), ("SGD", dict(lr=0.01, momentum=0.9, fused=True)), 20),
    "SGD Nesterov": ((optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True)),
                     ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True, fused=True)), 20),
    "Adagrad": ((optim.Adagrad, {}), ("Adagrad", dict(fused=True)), 20),
    "RMSprop": ((optim.RMSprop, {}), ("RMSprop", dict(foreach=True)), 20),
    "Adam": ((optim.Adam, {}), ("Adam", dict(fused=True)), 28),
    "Adam + clip": ((optim.Adam, dict(max_grad_norm=1.0)), ("Adam", dict(fused=True)), 32),
    "AdamW": ((optim.AdamW, {}), ("AdamW", dict(fused=True)), 28),
    # the optional states: amsgrad's running maximum (+ read and write), centered RMSprop's gradient average and
    # its momentum buffer (p, g, square, average, buffer read; all but g written)
    "Adam amsgrad": ((optim.Adam, dict(amsgrad=True)), ("Adam", dict(amsgrad=True, fused=True)), 36),
    "RMSprop centered momentum": ((optim.RMSprop, dict(centered=True, momentum=0.9)),
                                  ("RMSprop", dict(centered=True, momentum=0.9, foreach=True)), 36),
    # two parameter groups, PyTorch's usual split: weight decay on the matrices, none on the vectors (one group
    # where a layout has only one kind)
    "AdamW 2 groups": ((optim.AdamW, {}), ("AdamW", dict(fused=True)), 28),
    "LARS": ((optim.LARS, dict(lr=0.1)), None, 28),  # norm pass reads p, g; step reads p, g, b, writes p, b
    "LAMB": ((optim.LAMB, {}), None, 40),  # moments read p, g, m, v, write m, v; apply reads p, m, v, writes p
}


@njit(parallel=True, cache=True)
def adam_traffic(p, g, m, v):
    """The ceiling: Adam's reads and writes with trivial arithmetic."""
    for i in prange(p.size):
        a = p[i] + g[i]
        b = m[i] + v[i]
        p[i] = a
        m[i] = b
        v[i] = a - b


def decay_groups(parameters):
    """[{"params": matrices}, {"params": vectors, "weight_decay": 0.0}], leaving out an empty group."""
    matrices = [p for p in parameters if len(p.shape) >= 2]
    vectors = [p for p in parameters if len(p.shape) < 2]
    return [group for group in ({"params": matrices}, {"params": vectors, "weight_decay": 0.0}) if group["params"]]


def fastdl_step(case, shapes):
    (cls, kwargs), _, _ = CASES[case]
    rng = np.random.default_rng(0)
    parameters = [fastdl.Parameter(rng.standard_normal(shape).astype(np.float32) * 0.1) for shape in shapes]
    optimizer = cls(decay_groups(parameters) if case.endswith("2 groups") else parameters, **kwargs)
    for parameter in parameters:
        parameter.grad = rng.standard_normal(parameter.shape).astype(np.float32)
    return optimizer.step


def torch_step(case, shapes):
    try:
        import torch
    except ImportError:
        return None
    _, reference, _ = CASES[case]
    if reference is None:
        return None
    name, kwargs = reference
    tensors = [torch.randn(shape) * 0.1 for shape in shapes]
    for tensor in tensors:
        tensor.requires_grad_(True)
        tensor.grad = torch.randn(tensor.shape)
    optimizer = getattr(torch.optim, name)(decay_groups(tensors) if case.endswith("2 groups") else tensors, **kwargs)
    if case.endswith("clip"):
        def step():
            torch.nn.utils.clip_grad_norm_(tensors, 1.0, foreach=True)
            optimizer.step()
        return step
    return optimizer.step


def measure(layout):
    shapes = LAYOUTS[layout]
    elements = sum(int(np.prod(shape)) for shape in shapes)
    arrays = [np.ones(elements, np.float32) for _ in range(4)]
    calls = {"ceiling": lambda: adam_traffic(*arrays)}
    for case in CASES:
        calls[f"fastdl {case}"] = fastdl_step(case, shapes)
        step = torch_step(case, shapes)
        if step is not None:
            calls[f"torch {case}"] = step
    per_round = interleaved_rounds(calls, rounds=7)
    times = medians(per_round)
    ceiling_gbps = 28 * elements / times["ceiling"] / 1e3
    rows = []
    for case, (_, _, bytes_per_parameter) in CASES.items():
        fastdl_us = times[f"fastdl {case}"]
        rows.append({
            "layout": layout, "case": case, "fastdl_us": fastdl_us, "torch_us": times.get(f"torch {case}"),
            "GBps": bytes_per_parameter * elements / fastdl_us / 1e3, "ceiling_GBps": ceiling_gbps,
            # fraction of the ceiling: the ceiling's time for these bytes over the step's time, paired per round
            "of_ceiling": bytes_per_parameter / 28 * paired(per_round, "ceiling", f"fastdl {case}"),
            "over_ceiling_kernel": paired(per_round, f"fastdl {case}", "ceiling"),
            "torch_speedup": paired(per_round, f"torch {case}", f"fastdl {case}"),
        })
    clip = paired(per_round, "fastdl Adam + clip", "fastdl Adam")
    groups = paired(per_round, "fastdl AdamW 2 groups", "fastdl AdamW")
    return rows, {"layout": layout, "ceiling_GBps": ceiling_gbps, "ceiling_us": times["ceiling"],
                  "adam_clip_over_adam": clip, "two_groups_over_one": groups}


def table(rows, summaries):
    lines = ["| parameters | step | fastdl | GB/s | % of ceiling | time / ceiling kernel | PyTorch best | PyTorch / fastdl |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        torch_cells = (f"{r['torch_us'] / 1e3:.3f} ms | {r['torch_speedup']:.2f}x" if r["torch_us"] else "- | -")
        lines.append(f"| {r['layout']} | {r['case']} | {r['fastdl_us'] / 1e3:.3f} ms | {r['GBps']:.0f} | "
                     f"{100 * r['of_ceiling']:.0f}% | {r['over_ceiling_kernel']:.2f}x | {torch_cells} |")
    lines.append("")
    for s in summaries:
        lines.append(f"- {s['layout']}: ceiling kernel {s['ceiling_us'] / 1e3:.2f} ms = {s['ceiling_GBps']:.0f} GB/s; "
                     f"Adam with max_grad_norm costs {s['adam_clip_over_adam']:.2f}x Adam without it; AdamW with two "
                     f"parameter groups {s['two_groups_over_one']:.2f}x AdamW with one")
    return "\n".join(lines)


def main():
    fastdl.set_backend("cpu")
    results = [measure(layout) for layout in LAYOUTS]
    rows = [row for layout_rows, _ in results for row in layout_rows]
    summaries = [summary for _, summary in results]
    machine = f"{platform.processor() or platform.machine()}, {fastdl.get_num_threads()} threads"
    try:
        import torch
        machine += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        machine += ", torch not installed"
    header = (f"Optimizer steps, float32, {datetime.date.today()}, {machine}; ceiling = a parallel "
              "Numba kernel with Adam's traffic (28 B/parameter)\n\n")
    write_results("cpu-optim", header + table(rows, summaries), {"machine": machine, "rows": rows,
                                                                 "summaries": summaries})


if __name__ == "__main__":
    main()
