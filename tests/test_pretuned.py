"""Choices shipped for a GPU model (alexspec.kernels.tuning.pretuned): which entry serves a launch, that
they are only taken where this machine timed nothing, that a shipped table names only configs
and implementations the kernels still offer, and bench/pretune.py, which makes a table."""
from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from kernel_helpers import torch  # noqa: F401  (skips without torch and triton)

import triton

from alexspec import settings
from alexspec.kernels.ops import conv
from alexspec.kernels.tuning import conv_choice, pretuned

GPU = "Test GPU 80GB"
CONFIGS = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=3),
           triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
           triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=4)]
KEY_NAMES = ["M", "OCG", "K", "SPLIT"]


def described(config) -> dict:
    """A config as Triton's cache (and so a table) writes it."""
    return {"kwargs": config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages,
            "num_ctas": config.num_ctas, "maxnreg": config.maxnreg}


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A table for GPU in a folder of its own: the kernel `_k` tuned at M 1024 (third config) and
    M 4096 (second), and two conv shapes at batch 256."""
    monkeypatch.setattr(pretuned, "FOLDER", tmp_path)
    monkeypatch.setattr(settings, "_current", dataclasses.replace(settings.current(), pretuned=True))
    monkeypatch.setattr(pretuned, "_seen", {})
    pretuned.reload()
    table = {"device": GPU, "compute_capability": "9.0", "multiprocessors": 132, "made_from": "test",
             "autotune": {"_k": [{"key": [1024, 96, 363, 8, "torch.bfloat16"], "config": described(CONFIGS[2])},
                                 {"key": [4096, 96, 363, 32, "torch.bfloat16"], "config": described(CONFIGS[1])}]},
             "conv": {"x [256, 96, 27, 27] nhwc bfloat16, weight [256, 48, 5, 5], relu True": "triton",
                      "x [256, 256, 13, 13] nhwc bfloat16, weight [384, 256, 3, 3], backward": "cudnn+triton"}}
    pretuned.table_path(GPU).write_text(json.dumps(table))
    yield table
    pretuned.reload()


def lookup(key, configs=CONFIGS, device=GPU):
    return pretuned.autotune_config("_k", KEY_NAMES, tuple(key), configs, device)


def test_a_launch_takes_the_config_shipped_for_its_key(shipped):
    assert lookup([1024, 96, 363, 8, "torch.bfloat16"]) is CONFIGS[2]  # the kernel's own Config object
    assert lookup([4096, 96, 363, 32, "torch.bfloat16"]) is CONFIGS[1]


def test_another_batch_takes_the_nearest_batch_within_4x_and_nothing_further(shipped):
    assert lookup([2048, 96, 363, 16, "torch.bfloat16"]) in (CONFIGS[1], CONFIGS[2])
    assert lookup([1536, 96, 363, 8, "torch.bfloat16"]) is CONFIGS[2]  # nearer 1024 than 4096
    assert lookup([3500, 96, 363, 32, "torch.bfloat16"]) is CONFIGS[1]
    assert lookup([16384, 96, 363, 32, "torch.bfloat16"]) is CONFIGS[1]  # 4x: still served
    assert lookup([16385, 96, 363, 32, "torch.bfloat16"]) is None
    assert lookup([255, 96, 363, 8, "torch.bfloat16"]) is None


def test_another_layer_dtype_or_gpu_is_not_served(shipped):
    assert lookup([1024, 128, 363, 8, "torch.bfloat16"]) is None  # another output channel count
    assert lookup([1024, 96, 363, 8, "torch.float32"]) is None
    assert lookup([1024, 96, 363, 8, "torch.bfloat16"], device="Another GPU") is None
    assert lookup([1024, 96, 363, 8, "torch.bfloat16"], device=None) is None  # no GPU
    assert pretuned.autotune_config("_other", KEY_NAMES, (1024, 96, 363, 8, "torch.bfloat16"), CONFIGS, GPU) is None


def test_a_model_without_a_table_takes_a_siblings_with_the_same_capability_and_sms(shipped):
    key = [1024, 96, 363, 8, "torch.bfloat16"]
    assert lookup(key, device="Sibling GPU") is None  # not yet met: nothing known of it
    pretuned.seen("Sibling GPU", "9.0", 132)
    pretuned.seen("Fewer SMs GPU", "9.0", 114)
    pretuned.seen("Newer GPU", "10.0", 132)
    assert lookup(key, device="Sibling GPU") is CONFIGS[2]
    assert pretuned.serving("Sibling GPU")["device"] == GPU
    assert pretuned.what_served("Sibling GPU")["shipped_table"] == GPU
    assert pretuned.what_served("Fewer SMs GPU")["shipped_table"] is None
    assert lookup(key, device="Fewer SMs GPU") is None and lookup(key, device="Newer GPU") is None
    own = {**shipped, "device": "Sibling GPU", "autotune": {"_k": [{"key": key, "config": described(CONFIGS[0])}]}}
    pretuned.table_path("Sibling GPU").write_text(json.dumps(own))
    pretuned.reload()
    assert lookup(key, device="Sibling GPU") is CONFIGS[0]  # its own table comes first


def test_a_table_without_capability_and_sms_serves_only_its_own_model(shipped):
    pretuned.table_path(GPU).write_text(json.dumps({key: value for key, value in shipped.items()
                                                    if key not in ("compute_capability", "multiprocessors")}))
    pretuned.reload()
    pretuned.seen("Sibling GPU", "9.0", 132)
    assert lookup([1024, 96, 363, 8, "torch.bfloat16"], device="Sibling GPU") is None
    assert lookup([1024, 96, 363, 8, "torch.bfloat16"]) is CONFIGS[2]


def test_device_name_notes_the_gpus_capability_and_sms(shipped, monkeypatch):
    # without a GPU here: torch.cuda answering as an H200 would
    from types import SimpleNamespace
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(
        name="Sibling GPU", major=9, minor=0, multi_processor_count=132))
    assert pretuned.device_name() == "Sibling GPU"
    assert pretuned.serving("Sibling GPU")["device"] == GPU


def test_a_config_the_kernel_no_longer_offers_is_ignored(shipped):
    assert lookup([1024, 96, 363, 8, "torch.bfloat16"], configs=CONFIGS[:2]) is None


def test_alexspec_pretuned_0_takes_nothing(shipped):
    with settings.override(pretuned=False):
        assert lookup([1024, 96, 363, 8, "torch.bfloat16"]) is None
        assert pretuned.conv_implementation("x [256, 96, 27, 27] nhwc bfloat16, weight [256, 48, 5, 5], relu True",
                                            {"triton": None, "cudnn": None}, GPU) is None
    assert lookup([1024, 96, 363, 8, "torch.bfloat16"]) is not None  # the environment's setting again


def test_a_conv_takes_the_shipped_implementation_at_its_batch_or_the_nearest(shipped):
    candidates = {"triton": None, "cudnn": None, "cudnn+triton": None}
    shape = "x [{}, 256, 13, 13] nhwc bfloat16, weight [384, 256, 3, 3], backward"
    assert pretuned.conv_implementation(shape.format(256), candidates, GPU) == "cudnn+triton"
    assert pretuned.conv_implementation(shape.format(128), candidates, GPU) == "cudnn+triton"
    assert pretuned.conv_implementation(shape.format(32), candidates, GPU) is None  # 8x away
    assert pretuned.conv_implementation(shape.format(256), {"triton": None, "cudnn": None}, GPU) is None  # no mix


def test_a_table_for_another_model_or_not_json_serves_nothing(shipped, tmp_path):
    pretuned.table_path("Other GPU").write_text(json.dumps({**shipped, "device": "GPU it was made on"}))
    assert pretuned.table("Other GPU") is None
    pretuned.table_path("Broken GPU").write_text("{not json")
    with pytest.warns(UserWarning, match="not valid JSON"):
        assert pretuned.table("Broken GPU") is None
    assert pretuned.table("Unknown GPU") is None


def test_choose_takes_a_stored_choice_first_then_the_shipped_one_untimed(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(conv_choice._state, "chosen", {})
    monkeypatch.setattr(conv_choice._state, "stored", None)
    implementations = {"triton": lambda: None, "cudnn": lambda: None}
    never = lambda run: pytest.fail("timed")  # noqa: E731

    def choose(shipped, timer=never):
        return conv_choice.choose(("k",), lambda: "x [1] nhwc", implementations, (), lambda: True, timer=timer,
                                  machine=lambda: "H100", pretuned=lambda: shipped)

    with conv_choice.using("auto"):
        assert choose("cudnn") == "cudnn"
        assert conv_choice.choices() == [{"shape": "x [1] nhwc", "implementation": "cudnn", "pretuned": True}]
        assert not conv_choice.store_path().exists()  # nothing was timed here, so nothing is kept
        conv_choice.forget()
        assert choose("cudnn+triton", timer=lambda run: 1.0) in implementations  # not a candidate: timed
        conv_choice.forget()  # the file now holds this machine's timing, which comes first
        assert choose("cudnn") == json.loads(conv_choice.store_path().read_text())["H100 | x [1] nhwc"][
            "implementation"]


def test_planning_takes_known_choices_and_the_triton_kernel_elsewhere_timing_nothing(monkeypatch):
    monkeypatch.setattr(conv_choice._state, "chosen", {})
    never = lambda run: pytest.fail("timed while planning")  # noqa: E731
    implementations = {"triton": None, "cudnn": None}
    with conv_choice.using("auto"), conv_choice.planning():
        assert conv_choice.choose(("a",), lambda: "a", implementations, (), lambda: True, timer=never,
                                  pretuned=lambda: "cudnn") == "cudnn"
        assert conv_choice.choose(("b",), lambda: "b", implementations, (), lambda: True, timer=never,
                                  pretuned=lambda: None) == "triton"
    assert [entry["shape"] for entry in conv_choice.choices()] == ["a"]  # "b" is still to be timed
    assert not conv_choice._state.planning


def _tuners_by_kernel() -> dict:
    from triton.runtime.autotuner import Autotuner

    found = {}
    for name in ("conv_triton", "lrn", "lrn_pool", "maxpool"):
        module = importlib.import_module(f"alexspec.kernels.ops.{name}")
        for value in vars(module).values():
            if isinstance(value, Autotuner):
                found[value.base_fn.__name__] = value
    return found


SHIPPED = sorted(pretuned.FOLDER.glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_each_shipped_table_names_only_configs_and_implementations_the_kernels_offer(path):
    # a kernel whose configs changed needs its table re-made on that GPU (bench/pretune.py) or its entries dropped
    table = json.loads(path.read_text())
    assert pretuned.table_path(table["device"]) == path
    tuners = _tuners_by_kernel()
    for kernel, entries in table["autotune"].items():
        assert kernel in tuners, f"{path.name}: no autotuned kernel {kernel}"
        tuner = tuners[kernel]
        for entry in entries:
            assert len(entry["key"]) >= len(tuner.keys), f"{path.name}: {kernel} key {entry['key']}"
            assert any(pretuned._same_config(c, entry["config"]) for c in tuner.offered_configs), \
                f"{path.name}: {kernel} has no config {entry['config']} any more"
    names = {*conv._IMPLEMENTATIONS, *conv._MIXED_BACKWARDS, "cudnn_c8"}
    assert set(table["conv"].values()) <= names
    assert all(pretuned._split_batch(shape)[0] for shape in table["conv"])


def test_an_h100_table_is_shipped_for_alexnet_at_batch_256():
    table = pretuned.table("NVIDIA H100 80GB HBM3")
    assert table is not None
    assert "x [256, 3, 227, 227] nhwc bfloat16, weight [96, 3, 11, 11], stride [4, 4], padding [0, 0], groups 1, " \
           "relu False" in table["conv"]
    assert {"_conv_forward_kernel", "_conv_weight_grad_kernel", "_lrn_forward_kernel", "_lrn_backward_kernel",
            "_max_pool_forward_kernel", "_max_pool_backward_kernel"} <= set(table["autotune"])


@pytest.mark.slow
def test_pretune_makes_a_table_from_a_gathered_record(tmp_path, monkeypatch):
    record = {"autotune": [{"kernel": "_k", "key": [1024, 96, "torch.bfloat16"], "best": {**described(CONFIGS[1]),
                                                                                          "pre_hook": None},
                            "timings_ms": []}],
              "conv_choices": {f"{GPU}, torch 2.11, triton 3.6, conv.py abc | x [256, 3] nhwc": {
                  "implementation": "triton", "triton_ms": 1.0, "cudnn_ms": 2.0}}}
    source = tmp_path / "autotune-2026-01-01.json"
    source.write_text(json.dumps(record))
    folder = tmp_path / "pretuned"
    script = ("import sys; from alexspec.kernels.tuning import pretuned; from pathlib import Path; "
              f"pretuned.FOLDER = Path({str(folder)!r}); sys.argv[0] = 'bench/pretune.py'; "
              "sys.path.insert(0, 'bench'); import pretune; sys.exit(pretune.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", script, str(source)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "1 autotuned kernel shapes and 1 conv choices for Test GPU 80GB" in done.stdout
    table = json.loads((folder / "Test_GPU_80GB.json").read_text())
    assert table["device"] == GPU and table["made_from"] == source.name
    assert table["conv"] == {"x [256, 3] nhwc": "triton"}
    assert pretuned._same_config(CONFIGS[1], table["autotune"]["_k"][0]["config"])
    assert "pre_hook" not in table["autotune"]["_k"][0]["config"]
    assert "compute_capability" not in table and "serves no sibling model" in done.stdout
    record["gpu"] = {"name": GPU, "compute_capability": "9.0", "multiprocessors": 132}  # gathered on its machine
    source.write_text(json.dumps(record))
    done = subprocess.run([sys.executable, "-c", script, str(source)], capture_output=True, text=True, cwd=ROOT)
    table = json.loads((folder / "Test_GPU_80GB.json").read_text())
    assert (table["compute_capability"], table["multiprocessors"]) == ("9.0", 132) and "siblings" in done.stdout
    done = subprocess.run([sys.executable, "-c", script, str(source), "--multiprocessors", "114"],
                          capture_output=True, text=True, cwd=ROOT)
    assert json.loads((folder / "Test_GPU_80GB.json").read_text())["multiprocessors"] == 114


@pytest.mark.parametrize("content, options, says", [
    ("{not json", [], "cannot read it as JSON"),
    ('{"conv_choices": {}}', [], "not an autotune record"),
    ('{"autotune": [], "conv_choices": {}}', [], "name 0 GPU models"),
    ('{"autotune": [], "conv_choices": {}}', ["--device", "G", "--compute-capability", "9"], "not MAJOR.MINOR")])
def test_pretune_refuses_what_it_cannot_use_with_exit_2(tmp_path, content, options, says):
    source = tmp_path / "record.json"
    source.write_text(content)
    done = subprocess.run([sys.executable, "bench/pretune.py", str(source), *options],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
