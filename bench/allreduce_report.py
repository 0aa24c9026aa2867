"""All-reduce of a 10M-parameter model's gradients across ranks: one call on the flat buffer against one call
per tensor (what a framework without a flat buffer does), measured in turns in the same job.

    mpiexec -n 2 python bench/allreduce_report.py     # writes bench/results/cpu-allreduce.{md,json} on rank 0

Bus bandwidth follows NCCL's convention: algorithm bandwidth (bytes / time) times 2 (n - 1) / n, the bytes each
rank must send and receive in a ring all-reduce; on 2 ranks the two are equal.
"""

import datetime
import json
import pathlib
import statistics
import time

import numpy as np

import fastdl
from fastdl import distributed as dist

RESULTS = pathlib.Path(__file__).parent / "results"
# two 10M-parameter models: 25 wide layers, and 200 narrow ones (weights and biases, 50 and 400 tensors)
LAYOUTS = {"25 layers 632x632": [(632, 632), (576,)] * 25, "200 layers 223x223": [(223, 223), (223,)] * 200}


def timed(call, repeats=20):
    call()
    samples = []
    for _ in range(repeats):
        dist._context().comm.Barrier()
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    # a collective ends when the slowest rank ends: take the slowest rank's median
    return dist._context().comm.allreduce(statistics.median(samples), op=dist._mpi().MAX)


def measure(shapes):
    parameters = [fastdl.Parameter(np.ones(shape, np.float32)) for shape in shapes]
    optimizer = fastdl.optim.SGD(parameters, lr=0.1)
    comm, MPI = dist._context().comm, dist._mpi()
    flat = optimizer.groups[0].grad

    def per_tensor():
        for parameter in parameters:
            comm.Allreduce(MPI.IN_PLACE, parameter.grad, op=MPI.SUM)

    calls = {"flat, one call": lambda: comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM),
             "flat, 2 MiB buckets (fastdl)": lambda: dist.allreduce_gradients(optimizer, average=False),
             "one call per tensor": per_tensor}
    turns = {name: [] for name in calls}
    for _ in range(5):  # in turns: the host drifts
        for name, call in calls.items():
            turns[name].append(timed(call))
    n = dist.world_size()
    rows = []
    for name, seconds in turns.items():
        median = statistics.median(seconds)
        rows.append({"method": name, "ms": median * 1e3, "bus_GBps": flat.nbytes / median * 2 * (n - 1) / n / 1e9,
                     "speedup_vs_per_tensor": statistics.median(
                         t / s for s, t in zip(seconds, turns["one call per tensor"]))})
    return {"parameters": int(flat.size), "tensors": len(shapes), "rows": rows}


def main():
    dist.init()
    MPI = dist._mpi()
    results = {name: measure(shapes) for name, shapes in LAYOUTS.items()}
    if not dist.is_main():
        return
    report = {"date": datetime.date.today().isoformat(), "ranks": dist.world_size(),
              "mpi": MPI.Get_library_version().splitlines()[0], "layouts": results}
    lines = [f"All-reduce of float32 gradients of 10M-parameter models, {report['ranks']} ranks on one machine "
             f"({report['mpi'].strip()}), {report['date']}", "",
             "| model | method | time | bus bandwidth | x vs per tensor |", "|---|---|---|---|---|"]
    for layout, result in results.items():
        for row in result["rows"]:
            lines.append(f"| {layout} ({result['tensors']} tensors) | {row['method']} | {row['ms']:.2f} ms | "
                         f"{row['bus_GBps']:.1f} GB/s | {row['speedup_vs_per_tensor']:.2f}x |")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu-allreduce.md").write_text(text + "\n")
    (RESULTS / "cpu-allreduce.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
