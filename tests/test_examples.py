"""Every script in examples/ runs as a user would run it (a new process, in an empty folder) and prints what it
promises. Examples that need an optional package skip without it. They run on the numpy backend here (the same
code as on the default cpu backend, without a cold CI compiling their activations and training steps: about a
minute of Numba), except the hand-written loop and the grid search (populations run on the cpu backend only),
whose kernels the rest of the suite compiles anyway."""

import os

import importlib.util
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"

# script -> (optional packages it imports, arguments, backend, a line its output must contain)
EXPECTED = {
    "train_evaluate_save.py": ((), ["3"], "numpy", "reloaded test accuracy"),
    "custom_training_loop.py": ((), [], "cpu", "test accuracy"),
    "regression.py": ((), [], "numpy", "validation MSE of the restored model"),
    "pytorch_round_trip.py": (("torch", "safetensors"), [], "numpy", "round trip exact: True"),
    "onnx_export.py": (("onnx", "onnxruntime"), [], "numpy", "onnxruntime accuracy"),
    "grid_search.py": ((), ["4"], "cpu", "test accuracy of the best model"),  # populations need the cpu backend
}


def test_every_example_is_run_here():
    assert sorted(path.name for path in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs_and_prints_its_result(script, tmp_path):
    packages, arguments, backend, expected = EXPECTED[script]
    for package in packages:
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{script} needs {package}")
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *arguments], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "FASTDL_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout, result.stdout
