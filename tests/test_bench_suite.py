"""The benchmark suite runs: every case builds and runs on the CPU backend, and ``fastdl bench`` writes its
table, JSON and plot (timings themselves are never asserted here; they live in bench/results)."""

import json
import warnings

import pytest

import fastdl
from fastdl.__main__ import main as fastdl_main
from fastdl.bench import cases, runner


@pytest.mark.parametrize("case", cases.all_cases(), ids=lambda case: case.name)
def test_every_case_runs_on_the_cpu_backend(case):
    with fastdl.use_backend("cpu"):
        call = case.build()
        call()
    assert case.work > 0 and case.unit in (cases.BANDWIDTH, cases.GEMM)


def test_quick_suite_is_a_subset_with_every_op_family():
    quick = cases.suite("quick")
    families = {case.op.split(" ")[0] for case in quick}
    assert {"dense", "softmax", "batch", "dropout", "optimizer", "MLP"} <= families
    assert len(quick) < len(cases.suite("full"))
    with pytest.raises(ValueError, match="quick"):
        cases.suite("everything")


def test_bench_command_writes_table_json_and_plot(tmp_path, monkeypatch, capsys):
    small = [cases.dense_case("relu", (8, 16, 16), True, quick=True),
             cases.optimizer_case("Adam", "MLP 64-64-64-10", True),
             cases.dense_case("relu", (8, 16, 16), False, quick=True, compute="bfloat16")]
    monkeypatch.setattr(cases, "suite", lambda name: small)
    monkeypatch.setitem(runner.SETTINGS, "quick", dict(rounds=2, seconds_per_call=0.001, pause=0.0))
    monkeypatch.setattr(runner.ceilings, "cpu_ceilings", lambda quick: {
        "copy_GBps": 40.0, "triad_GBps": 30.0, "bandwidth_GBps": 40.0, "stream_copy_GBps": 27.0, "gemm_GFLOPs": 100.0,
        "stream_elements": 1, "gemm_side": 1, "bfloat16_gemm_GFLOPs": 400.0, "tf32_gemm_GFLOPs": 900.0})
    with warnings.catch_warnings():  # the bfloat16 case on the numpy backend: "not faster", once per process
        warnings.simplefilter("ignore", fastdl.BFloat16Notice)
        assert fastdl_main(["bench", "--backend", "numpy,cpu", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "cpu-numpy-quick.json").read_text())
    rows = report["results"]
    assert [(r["op"], r["backend"]) for r in rows] == [(case.op, backend) for case in small
                                                       for backend in ("numpy", "cpu")]
    for row in rows:
        assert row["rate"] == pytest.approx(
            next(c.work for c in small if c.op == row["op"]) / row["us"] / 1e3)
        # GEMM-bound cases against the GEMM of their operands' precision, the others against the bandwidth
        ceiling = 40.0 if row["unit"] != "GFLOP/s" else 400.0 if "bfloat16" in row["op"] else 100.0
        assert row["of_ceiling"] == pytest.approx(row["rate"] / ceiling)
    assert all(r["vs_numpy"] > 0 for r in rows if r["backend"] == "cpu")
    table = (tmp_path / "cpu-numpy-quick.md").read_text()
    assert "| dense fwd+bwd (relu) | 8x16x16 | cpu |" in table and "copy 40.0 GB/s" in table
    assert "400 GFLOP/s (bfloat16 operands" in table and "900 GFLOP/s (TF32" in table
    assert (tmp_path / "cpu-numpy-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_each_ceiling_is_the_higher_of_its_measurements_before_and_after_the_cases(monkeypatch):
    """A minute in which the host's neighbours take the cores must not become the ceiling every case is judged by."""
    small = [cases.optimizer_case("Adam", "MLP 64-64-64-10", True), cases.dense_case("relu", (8, 16, 16), True,
                                                                                     quick=True)]
    monkeypatch.setattr(cases, "suite", lambda name: small)
    monkeypatch.setitem(runner.SETTINGS, "quick", dict(rounds=2, seconds_per_call=0.001, pause=0.0))
    measurements = iter([(20.0, 400.0), (50.0, 100.0)])  # (bandwidth, GEMM): before, then after

    def measure(quick):
        bandwidth, gemm = next(measurements)
        return {"copy_GBps": bandwidth, "triad_GBps": bandwidth / 2, "bandwidth_GBps": bandwidth,
                "stream_copy_GBps": bandwidth / 2, "gemm_GFLOPs": gemm, "stream_elements": 1, "gemm_side": 1}
    monkeypatch.setattr(runner.ceilings, "cpu_ceilings", measure)
    report = runner.run_suite("quick", ["cpu"], use_torch=False, progress=None, use_jax=False)
    assert report["ceilings"]["cpu"]["bandwidth_GBps"] == 50.0 and report["ceilings"]["cpu"]["gemm_GFLOPs"] == 400.0
    adam, dense = report["results"]
    assert adam["of_ceiling"] == pytest.approx(adam["rate"] / 50.0)
    assert dense["of_ceiling"] == pytest.approx(dense["rate"] / 400.0)
    assert "GEMM 400 and 100 GFLOP/s, bandwidth 20.0 and 50.0 GB/s" in runner.format_table(report)


def test_bench_command_reports_an_unknown_backend(capsys):
    assert fastdl_main(["bench", "--backend", "tpu"]) == 2
    assert "tpu" in capsys.readouterr().err


def test_every_mlp_step_has_a_layer_path_row_beside_its_compile_step_row():
    steps = [case for case in cases.all_cases() if case.op.startswith("MLP train step")]
    by_path = {path: {(case.op.rsplit(", ", 1)[0], case.size) for case in steps if case.op.endswith(path)}
               for path in cases.STEP_PATHS}
    assert by_path["compile_step"] == by_path["layer path"] and len(by_path["compile_step"]) == 7
    # JAX is a peer in float32; its CPU backend has no bfloat16 path worth comparing against
    assert all((case.build_jax is None) == ("bfloat16" in case.op) for case in steps)
    with pytest.raises(ValueError, match="path must be one of"):
        cases.mlp_step_case([4, 2], 2, False, quick=True, path="eager")


def test_jax_column_appears_only_when_jax_ran(monkeypatch):
    case = cases.dense_case("relu", (8, 16, 16), False, quick=True)
    settings = dict(rounds=2, seconds_per_call=0.001, pause=0.0)
    monkeypatch.setattr(runner, "_jax_available", lambda: True)
    case.build_jax = lambda: (lambda: None)  # a stand-in peer: the plumbing, not JAX, is under test here
    with_jax = runner.run_case(case, ["cpu"], use_torch=False, settings=settings)
    without = runner.run_case(case, ["cpu"], use_torch=False, settings=settings, use_jax=False)
    assert with_jax[0]["jax_us"] > 0 and with_jax[0]["vs_jax"] > 0
    assert without[0]["jax_us"] is None and without[0]["vs_jax"] is None
    report = {"suite": "quick", "ceilings": {}, "skipped_backends": {},
              "machine": {"date": "d", "cpu": "c", "cores": 2, "numpy": "n", "numba": "b", "torch": None}}
    for row in with_jax + without:
        row["of_ceiling"] = 0.5
    assert "| JAX | x vs JAX |" in runner.format_table({**report, "results": with_jax})
    assert "JAX" not in runner.format_table({**report, "results": without})


def test_without_pytorch_the_table_and_plot_leave_its_columns_out_and_say_how_to_add_them(tmp_path):
    row = {"op": "dense fwd (relu)", "size": "8x16x16", "backend": "cpu", "us": 10.0, "rate": 1.0, "unit": "GFLOP/s",
           "of_ceiling": 0.5, "vs_numpy": 2.0, "torch_us": None, "vs_torch": None, "first_call_ms": 3.0}
    report = {"suite": "quick", "ceilings": {}, "skipped_backends": {"gpu": "CuPy is not installed"}, "results": [row],
              "machine": {"date": "2026-12-02", "cpu": "c", "cores": 2, "numpy": "n", "numba": "b", "torch": None}}
    table = runner.format_table(report)
    assert "PyTorch |" not in table and table.count(runner.TORCH_HINT) == 1
    assert table.count("CuPy is not installed") == 1
    assert "| dense fwd (relu) | 8x16x16 | cpu | 10.0 us | 1.0 GFLOP/s | 50% | 2.0x | 3 ms |" in table
    with_torch = {**report, "results": [{**row, "torch_us": 20.0, "vs_torch": 2.0}]}
    assert "| PyTorch | x vs PyTorch |" in runner.format_table(with_torch)
    assert runner.TORCH_HINT not in runner.format_table(with_torch)
    pytest.importorskip("matplotlib")
    runner.plot(report, tmp_path / "plot.png")  # one panel: no speed-up axis to fill with zeros
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpu_targets_measure_each_gemm_precision_on_the_emulator(capsys):
    """bench/gpu_targets.py runs only on a lent GPU: its precision rows are exercised here on the emulator (tiny,
    no PyTorch), so the one device call that runs it does not fail on them."""
    import importlib.util
    import pathlib

    import numpy as np

    path = pathlib.Path(__file__).parent.parent / "bench" / "gpu_targets.py"
    spec = importlib.util.spec_from_file_location("gpu_targets", path)
    targets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(targets)
    with fastdl.use_backend("cuda-emulator"), warnings.catch_warnings():
        warnings.simplefilter("error")  # the emulator has cuBLAS's bfloat16 GEMM: no notice
        rows = targets.dense_precisions(np, None, lambda: None, side=16, repeat=1)
    assert [row["mode"] for row in rows] == ["float32", "tf32", "bfloat16"]
    assert all(row["fastdl_us"] > 0 and row["torch_us"] is None for row in rows)
    assert fastdl.get_float32_matmul_precision() == "highest"  # restored
    report = {"machine": {"date": "d", "gpu": "g", "cuda_runtime": 1, "cupy": "c", "torch": None},
              "ceiling": {"elements": 1 << 20, "GBps": 1.0},
              "adam": {"parameters": 1e6, "fastdl_us": 1.0, "GBps": 1.0, "of_ceiling": 1.0, "torch_us": None,
                       "vs_torch": None, "bf16_us": 1.0, "bf16_GBps": 1.0, "bf16_vs_torch": None},
              "batchnorm": [], "dense": {"side": 16, "fastdl_us": 1.0, "TFLOPs": 1.0, "bare_us": 1.0,
                                         "over_bare": 1.0, "torch_us": None, "vs_torch": None},
              "dense_precisions": rows}
    text = targets.table(report)
    for mode in ("float32", "tf32", "bfloat16"):
        assert f"| Dense fwd+bwd (ReLU), {mode} | 16^3 |" in text
