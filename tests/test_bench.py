"""`alexspec bench` runs end to end on CPU and records what a GPU run records (no timing asserted)."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli

pytest.importorskip("torch")


def test_bench_on_cpu_writes_the_result(tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", "lenet5", "--precision", "fp32", "--compare", "eager", "--steps", "1",
                     "--warmup", "0", "--batch", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "no CUDA device: benchmarking the torch backend on CPU" in result.stdout
    data = json.loads(out.read_text())
    assert {"device", "torch", "triton", "date", "batch", "precision", "results", "profile"} <= set(data)
    assert set(data["results"]) == {"alexspec", "eager"}
    assert data["results"]["alexspec"]["train_img_s"] > 0 and data["results"]["eager"]["alexspec_train_speedup"] > 0
    assert data["profile"] and all(row["ms_per_step"] >= 0 for row in data["profile"])


def test_cpu_figures(tmp_path):
    out = tmp_path / "cpu.json"
    result = run_cli("bench", "--cpu-figures", "--out", str(out))
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())["cpu_figures"]
    assert figures["compiler_imports_torch"] is False
    assert figures["report_wall_s"] > 0 and figures["validate_infer_1000_layers_s"] > 0


def test_bad_baseline_name():
    result = run_cli("bench", "lenet5", "--compare", "tensorflow")
    assert result.returncode == 2 and "--compare takes eager and/or compile" in result.stderr
