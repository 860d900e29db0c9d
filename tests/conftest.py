"""Shared helpers: run the CLI as a user would, write specs, locate text in them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# Without a GPU the Triton kernels run in Triton's interpreter; it must be chosen before
# triton is first imported (torch does not import it on its own).
CUDA = _cuda_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# A small valid spec; tests splice layers into it.
HEADER = """\
alexspec: 1
name: tiny
input: {channels: 3, height: 32, width: 32}
layers:
"""


# A small two-tower net for 1x8x8 images (the bundled digits): shared input, per-tower LRN,
# a crossing conv and a crossing linear layer.
TINY_TOWERS = """\
alexspec: 1
name: tiny_towers
input: {channels: 1, height: 8, width: 8}
towers: 2
layers:
  - {name: conv1, type: conv, out: 8, kernel: 3, padding: 1, activation: relu}
  - {name: norm1, type: lrn, size: 3, alpha: 0.01, k: 2}
  - {name: pool1, type: maxpool, kernel: 2}
  - {name: conv2, type: conv, out: 8, kernel: 3, padding: 1, activation: relu, towers: cross}
  - {name: flatten, type: flatten}
  - {name: fc, type: linear, out: 10, towers: cross}
training: {lr: 0.05, batch: 32, epochs: 1}
"""


def with_trained_statistics(model):
    """`model` with the running statistics of its batchnorms as a trained model has them (not the
    identity a new one starts with), so that an import or a load is checked on them too."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1), module.running_var.uniform_(0.8, 1.2)
    return model


def spec_text(*layer_lines: str, header: str = HEADER) -> str:
    return header + "".join(f"  - {line}\n" for line in layer_lines)


def locate(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, col) of the n-th occurrence of `needle` in `text`: the oracle for error locations."""
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, col


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`alexspec ARGS` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "alexspec", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=120)


@pytest.fixture
def write_spec(tmp_path):
    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path
    return write


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not CUDA:
            item.add_marker(skip_gpu)


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
