"""Compiling every kernel of a step ahead, all at once (alexspec.kernels.tuning.ahead), checked on CPU by
compiling for an H100 (sm_90) that is not there: what binaries a step needs, that they are
all compiled before the step's first launch, that the module is left as it was."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_TOWERS
from kernel_helpers import torch  # noqa: F401  (skips without torch and triton)

from alexspec.kernels.tuning import ahead
from alexspec.kernels.ops.launch import INTERPRET


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One empty Triton cache for this file's fresh processes."""
    return tmp_path_factory.mktemp("triton-cache-sm90")


def compiled_for_sm90(script: str, cache, autotune: str = "quick", device_name: str | None = None,
                      multiprocessors: int | None = None, **switches: str) -> dict:
    """Run `script` in a fresh process with compiled Triton (no interpreter) and stand_in_gpu(90)
    (standing in for the GPU model `device_name`, of `multiprocessors` SMs) around it; it prints one JSON line, returned
    here. Helpers in scope: binaries(), a
    {kernel name: [compiled kernels]} of what the kernels' JIT caches hold now."""
    prelude = (
        "import json, torch\n"
        "from alexspec.kernels import lrn\n"
        "from alexspec.kernels.ops import conv, conv_triton, maxpool\n"
        "from alexspec.kernels.tuning import ahead\n"
        "import importlib\n"
        "kernels = [conv_triton._conv_forward_kernel, conv_triton._conv_weight_grad_kernel,\n"
        "           importlib.import_module('alexspec.kernels.ops.lrn')._lrn_forward_kernel,\n"
        "           importlib.import_module('alexspec.kernels.ops.lrn')._lrn_backward_kernel,\n"
        "           maxpool._max_pool_forward_kernel, maxpool._max_pool_backward_kernel]\n"
        "def binaries():\n"
        "    found = {}\n"
        "    for tuner in kernels:\n"
        "        caches = [cache[0] for cache in tuner.fn.device_caches.values()]\n"
        "        found[tuner.fn.__name__] = [k.result() if hasattr(k, 'result') else k\n"
        "                                    for cache in caches for k in cache.values()]\n"
        "    return found\n"
        f"with ahead.stand_in_gpu(90, device_name={device_name!r}, multiprocessors={multiprocessors!r}):\n"
    )
    body = "".join(f"    {line}\n" for line in script.strip().splitlines())
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", prelude + body], capture_output=True, text=True, cwd=ROOT,
                          env={**env, "ALEXSPEC_AUTOTUNE": autotune, "ALEXSPEC_CONV": "auto",
                               "TRITON_CACHE_DIR": str(cache), **switches}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_conv_its_relu_free_twin_and_a_bias_free_one_share_one_binary_per_config(cache):
    found = compiled_for_sm90("""
x = torch.randn(2, 16, 9, 9)
w, b = torch.randn(32, 16, 3, 3), torch.randn(32)
assert ahead.compile_ahead(lambda: [conv.conv2d_bias_relu(x, w, b, padding=1, relu=True),
                                    conv.conv2d_bias_relu(x, w, b, padding=1, relu=False),
                                    conv.conv2d_bias_relu(x, w, None, padding=1, relu=False)])
compiled = binaries()["_conv_forward_kernel"]
print(json.dumps({"count": len(compiled), "ptx_targets": [k.asm["ptx"].count(".target sm_90") for k in compiled]}))
""", cache, autotune="full")
    assert found["count"] == len(__import__("alexspec.kernels.ops.conv_triton", fromlist=["_CONFIGS"])._CONFIGS)
    assert found["ptx_targets"] == [1] * found["count"]  # compiled for the H100, not run anywhere


@pytest.mark.slow
def test_a_module_step_is_compiled_ahead_and_the_module_left_as_it_was(tmp_path, cache):
    spec = tmp_path / "towers.yaml"
    spec.write_text(TINY_TOWERS)
    found = compiled_for_sm90(f"""
from alexspec.builder import build
module = build({str(spec)!r}, backend="triton", devices=["cpu"]).module
before = {{name: p.detach().clone() for name, p in module.state_dict().items()}}
x = torch.randn(16, 1, 8, 8)
rng = torch.get_rng_state()
assert ahead.compile_module_ahead(module, x, inference=True)
first = {{name: len(found) for name, found in binaries().items()}}
assert ahead.compile_module_ahead(module, x, inference=True)
again = {{name: len(found) for name, found in binaries().items()}}
same = all(torch.equal(before[name], p) for name, p in module.state_dict().items())
grads = [p.grad for p in module.parameters()]
print(json.dumps({{"first": first, "again": again, "same": same, "no_grads": all(g is None for g in grads),
                   "training": module.training, "rng_kept": torch.equal(rng, torch.get_rng_state())}}))
""", cache)
    # forward and backward of conv (forward kernel: forward and input gradient), LRN and max pool
    assert all(count >= 1 for count in found["first"].values()), found["first"]
    assert found["again"] == found["first"]  # all compiled the first time: nothing new to compile
    assert found["same"] and found["no_grads"] and found["training"] and found["rng_kept"]


@pytest.mark.slow
def test_a_module_steps_backward_runs_where_triton_compiles_asynchronously(tmp_path, cache):
    # on a GPU autograd runs a backward in a thread of its own, where Triton's async compile mode
    # (a context variable) is not set: the backward's kernels would compile one by one there
    spec = tmp_path / "towers.yaml"
    spec.write_text(TINY_TOWERS)
    found = compiled_for_sm90(f"""
from triton.runtime import _async_compile
from alexspec.builder import build
module = build({str(spec)!r}, backend="triton", devices=["cpu"]).module
x = torch.randn(16, 1, 8, 8, requires_grad=True)
seen = []
x.register_hook(lambda grad: seen.append((_async_compile.active_mode.get() is not None,
                                          torch.autograd.is_multithreading_enabled())))
assert ahead.compile_module_ahead(module, x)
print(json.dumps({{"seen": seen, "after": torch.autograd.is_multithreading_enabled()}}))
""", cache)
    assert found["seen"] == [[True, False]]  # compiling asynchronously, in the calling thread
    assert found["after"]  # autograd's threads back as they were


@pytest.mark.slow
def test_each_kernel_signature_has_its_launcher_prepared_once_before_the_first_launch(cache):
    # triton 3.6 builds a launcher with gcc, from the kernel's signature alone, at a kernel's
    # first launch, one after the other; compiling ahead prepares it in the pool, right after
    # the first binary of that signature (the configs of a kernel share it)
    found = compiled_for_sm90("""
import threading
from triton.runtime import driver
prepared = []
def record(src, metadata):
    prepared.append((src.fn.__name__, threading.current_thread() is threading.main_thread()))
driver.active.launcher_cls = record
x = torch.randn(2, 8, 6, 6)
assert ahead.compile_ahead(lambda: [lrn(x, 5), lrn(x.double(), 5)])  # the function: alexspec.kernels exports it
compiled = binaries()["_lrn_forward_kernel"]
print(json.dumps({"prepared": prepared, "compiled": len(compiled), "tally": ahead.last_run}))
""", cache, autotune="full")
    configs = __import__("importlib").import_module("alexspec.kernels.ops.lrn")._CONFIGS
    assert sorted(found["prepared"]) == [["_lrn_forward_kernel", False]] * 2  # fp32 and fp64, in the pool's threads
    assert found["compiled"] > len(configs)  # fp64 takes fewer tiles (see lrn's prune), fp32 all of them
    tally = found["tally"]
    assert tally["binaries"] == found["compiled"] and tally["launchers"] == 2
    assert tally["compile_s"] > 0 and tally["threads"] >= 1 and tally["step_s"] >= 0 and tally["waiting_s"] >= 0
    assert tally["slowest"] == "_lrn_forward_kernel" and 0 < tally["slowest_s"] <= tally["compile_s"]


@pytest.mark.slow
def test_every_config_of_alexnets_training_step_compiles_for_an_h100_and_none_spills(cache):
    # what a cold start on an H100 compiles (bf16, channels-last, every conv by Triton): a config
    # ptxas rejects, or a kernel the interpreter runs but the compiler does not take, fails here;
    # so does a binary that spills registers to local memory (a config not worth timing)
    report = compiled_for_sm90("""
from alexspec.builder import build
from alexspec.kernels.tuning import conv_choice
from alexspec.kernels.tuning.resources import resources
module = build("specs/alexnet.yaml", backend="triton", devices=["cpu"]).module.to(memory_format=torch.channels_last)
x = torch.randn(16, 3, 227, 227).contiguous(memory_format=torch.channels_last)
assert ahead.compile_module_ahead(module, x, torch.bfloat16)
found = binaries()
used = [(k.name, resources(k)) for ks in found.values() for k in ks]
spilling = [f"{name}: {r}" for name, r in used if r.spilled_bytes]
print(json.dumps({"counts": {name: len(ks) for name, ks in found.items()}, "spilling": spilling}))
""", cache, autotune="full")
    found = report["counts"]
    assert report["spilling"] == []
    from alexspec.kernels.ops import conv_triton, maxpool
    lrn_module = __import__("importlib").import_module("alexspec.kernels.ops.lrn")
    # binaries per kernel: configs x the shapes that compile differently. conv forward: 11x11 stride 4,
    # 5x5 (conv2 and its input gradient), 3x3 (conv3-5 and their input gradients); weight gradient:
    # 11x11, 5x5, 3x3; LRN and max pool: one shape each (pool5's ReLU is a run-time flag)
    assert found == {"_conv_forward_kernel": 3 * len(conv_triton._CONFIGS),
                     "_conv_weight_grad_kernel": 3 * len(conv_triton._WEIGHT_GRAD_CONFIGS),
                     "_lrn_forward_kernel": len(lrn_module._CONFIGS),
                     "_lrn_backward_kernel": len(lrn_module._BACKWARD_CONFIGS),
                     "_max_pool_forward_kernel": len(maxpool.POOL_CONFIGS),
                     "_max_pool_backward_kernel": len(maxpool.POOL_CONFIGS)}


@pytest.mark.slow
def test_the_resource_table_lists_each_config_of_a_kernel(cache, tmp_path):
    # after the test above, the binaries are in the cache: this only reads them
    out = tmp_path / "resources.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "bench/kernel_resources.py", "--kernel", "_lrn_backward", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env={**env, "TRITON_CACHE_DIR": str(cache)},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    lrn_module = __import__("importlib").import_module("alexspec.kernels.ops.lrn")
    assert sorted((r["config"]["BLOCK_P"], r["config"]["BLOCK_C"], r["config"]["num_warps"]) for r in rows) == \
        sorted((c.kwargs["BLOCK_P"], c.kwargs["BLOCK_C"], c.num_warps) for c in lrn_module._BACKWARD_CONFIGS)
    assert all(r["shape"]["SIZE"] == 5 and r["shape"]["RELU"] is True for r in rows)  # norm1/norm2: relu on load
    assert all(r["shape"]["FAST"] is True for r in rows)  # compiled: the GPU's one-instruction log2
    assert all(0 < r["registers"] <= 255 and 0 < r["resident_warps"] <= 64 and r["instructions"] > 100 for r in rows)
    assert f"{len(rows)} binaries for sm_90, 0 spilling registers" in done.stdout



@pytest.mark.parametrize("script", ["bench/kernel_resources.py", "bench/compile_cost.py"])
def test_the_cpu_compile_scripts_name_a_bad_spec_and_exit_2(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, script, str(tmp_path / "missing.yaml")], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"{tmp_path / 'missing.yaml'}:1:1: no such file; check the path, or name a " \
                                  "bundled spec: alexnet, alexnet-1gpu, caffe-alexnet, d2l-alexnet, densenet121, " \
                                  "digits, digits-resnet, figure1-relu, figure1-tanh, googlenet, lenet5, " \
                                  "mobilenet_v2, mobilenet_v3_small, nin, resnet18, resnet50, squeezenet1_0, " \
                                  "torchvision-alexnet, " \
                                  "vgg11-bn, vgg16, zfnet"

LRN_STEP = ("x = torch.randn(2, 32, 5, 5, requires_grad=True)\n"
            "lrn_module = importlib.import_module('alexspec.kernels.ops.lrn')\n")


def time_lrn_forward_made_up(cache, fastest: int) -> dict:
    """In a fresh process on the stand-in GPU, autotune the LRN forward for real but with made-up
    timings (config `fastest` fastest): Triton writes them to its disk cache in `cache`; then the
    launch fails, as every launch on the stand-in GPU does. Returns {"timed": configs timed}."""
    return compiled_for_sm90(LRN_STEP + f"""
tuner = lrn_module._lrn_forward_kernel
tuner._bench = lambda *args, config, **meta: [1.0 if config is tuner.configs[{fastest}] else 2.0] * 3
try:
    lrn_module.lrn(x.detach(), 5)
except Exception:
    pass  # nothing launches on the stand-in GPU
print(json.dumps({{"timed": len(tuner.configs_timings)}}))
""", cache, autotune="full")


def lrn_binaries_compiled_ahead(cache, device_name: str | None = None, before: str = "",
                                multiprocessors: int | None = None) -> dict:
    """In a fresh process on the stand-in GPU (`device_name`, `multiprocessors`), after the lines `before`: compile an
    LRN forward and backward ahead; the forward's binaries (BLOCK_P, BLOCK_C, num_warps), the
    backward's count, and the shipped choices taken."""
    return compiled_for_sm90(LRN_STEP + before + """
from alexspec.kernels.tuning import pretuned
from alexspec.kernels.tuning.resources import compiled_binaries
assert ahead.compile_ahead(lambda: lrn_module.lrn(x, 5).sum().backward())
blocks = lambda c: [c["BLOCK_P"], c["BLOCK_C"], c["num_warps"]]
print(json.dumps({"forward": [blocks(c) for c, _ in compiled_binaries(lrn_module._lrn_forward_kernel.fn)],
                  "backward": len(binaries()["_lrn_backward_kernel"]), "used": pretuned.used}))
""", cache, autotune="full", device_name=device_name, multiprocessors=multiprocessors)


@pytest.mark.slow
def test_a_warm_start_compiles_only_the_config_an_earlier_process_timed_fastest(tmp_path):
    # process 1 times the LRN forward (the third config fastest). Process 2 compiles ahead: one
    # binary for that kernel, all for the backward (never timed)
    timed = time_lrn_forward_made_up(tmp_path, fastest=2)
    found = lrn_binaries_compiled_ahead(tmp_path)
    lrn_module = __import__("importlib").import_module("alexspec.kernels.ops.lrn")
    fastest = lrn_module._CONFIGS[2]
    assert timed["timed"] == len(lrn_module._CONFIGS)
    assert found["forward"] == [[fastest.kwargs["BLOCK_P"], fastest.kwargs["BLOCK_C"], fastest.num_warps]]
    assert found["backward"] == len(lrn_module._BACKWARD_CONFIGS)
    assert found["used"] == {"autotune": 0, "conv": 0}  # a GPU model with no table


@pytest.mark.slow
@pytest.mark.parametrize("device_name", ["Stand-in GPU", "Sibling GPU"])
def test_a_cold_start_on_a_gpu_model_with_a_shipped_table_compiles_only_the_configs_it_names(tmp_path, device_name):
    # process 1 times the LRN forward (the second config fastest); bench/autotune_choices.py
    # gathers that and pretuned makes the table of "that GPU" (sm_90, 132 SMs) from it. Process 2
    # starts on that GPU model, or on a sibling with no table (sm_90, 132 SMs), with an empty
    # cache: one binary for the forward, every config for the backward (the table has no entry for it)
    time_lrn_forward_made_up(tmp_path / "timed", fastest=1)
    gathered = subprocess.run([sys.executable, "bench/autotune_choices.py", str(tmp_path / "timed"), "--out",
                               str(tmp_path / "record.json")], capture_output=True, text=True, cwd=ROOT)
    assert gathered.returncode == 0, gathered.stderr
    from alexspec.kernels.tuning import pretuned
    table = pretuned.from_autotune_record(json.loads((tmp_path / "record.json").read_text()), "Stand-in GPU",
                                          compute_capability="9.0", multiprocessors=132)
    (tmp_path / "pretuned").mkdir()
    (tmp_path / "pretuned" / "Stand_in_GPU.json").write_text(json.dumps(table))
    found = lrn_binaries_compiled_ahead(tmp_path / "cold", device_name=device_name, multiprocessors=132, before=(
        "from pathlib import Path\nfrom alexspec.kernels.tuning import pretuned\n"
        f"pretuned.FOLDER = Path({str(tmp_path / 'pretuned')!r})\n"))
    lrn_module = __import__("importlib").import_module("alexspec.kernels.ops.lrn")
    fastest = lrn_module._CONFIGS[1]
    assert found["forward"] == [[fastest.kwargs["BLOCK_P"], fastest.kwargs["BLOCK_C"], fastest.num_warps]]
    assert found["backward"] == len(lrn_module._BACKWARD_CONFIGS)
    assert found["used"] == {"autotune": 1, "conv": 0}


@pytest.mark.slow
def test_on_an_h200_alexnets_step_at_batch_64_takes_every_choice_from_the_shipped_h100_table(tmp_path):
    # a cold start where alexspec ships no table of the model's own but a sibling's (the H100's:
    # sm_90, 132 SMs), tuned at batch 256: every autotuned launch and every conv takes the
    # table's choice, so each launch compiles one config and the convs run as the table says
    report = compiled_for_sm90("""
from alexspec.builder import build
from alexspec.kernels.tuning import conv_choice, pretuned
from alexspec.train.weight_copies import SGDWithCopies, WeightCopies
missed = []
looked_up = pretuned.autotune_config
def autotune_config(kernel, key_names, key, configs, device):
    found = looked_up(kernel, key_names, key, configs, device)
    missed.extend([] if found is not None else [kernel])
    return found
pretuned.autotune_config = autotune_config
torch.nn.functional.linear = lambda x, w, b=None, linear=torch.nn.functional.linear: linear(
    x.float(), w.float(), None if b is None else b.float()).to(x.dtype)  # a CPU's bf16 matmuls are slow
module = build("specs/alexnet.yaml", backend="triton", devices=["cpu"]).module.to(memory_format=torch.channels_last)
x = torch.randn(64, 3, 227, 227).contiguous(memory_format=torch.channels_last)
optimizer = SGDWithCopies(module.parameters(), WeightCopies(module), lr=1e-3, momentum=0.9, weight_decay=5e-4)
assert ahead.compile_module_ahead(module, x, torch.bfloat16, also=optimizer.compile_ahead)
print(json.dumps({"missed": missed, "used": pretuned.used, "binaries": ahead.last_run["binaries"],
                  "convs": len(conv_choice.choices()), "table": pretuned.serving("NVIDIA H200")["device"]}))
""", tmp_path, autotune="full", device_name="NVIDIA H200", multiprocessors=132)
    assert report["table"] == "NVIDIA H100 80GB HBM3"
    assert report["missed"] == []
    # conv1-5 forward and backward, each chosen once: all from the table
    assert report["used"]["conv"] == report["convs"] == 10
    assert 0 < report["binaries"] <= report["used"]["autotune"]  # one config a launch at most


def test_compile_ahead_off_compiles_nothing_and_runs_no_step(cache):
    found = compiled_for_sm90("""
ran = []
print(json.dumps({"done": ahead.compile_ahead(lambda: ran.append(1)), "ran": ran}))
""", cache, ALEXSPEC_COMPILE_AHEAD="0")
    assert found == {"done": False, "ran": []}


@pytest.mark.skipif(not INTERPRET, reason="about the interpreter (TRITON_INTERPRET=1)")
def test_under_the_interpreter_nothing_is_compiled_ahead_and_the_step_not_run():
    ran = []
    assert not ahead.compile_ahead(lambda: ran.append(1))
    assert ran == []
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET unset"):
        with ahead.stand_in_gpu():
            pass


def test_a_failing_step_warns_and_leaves_compiling_to_the_first_launch(cache):
    found = compiled_for_sm90("""
import warnings
def failing():
    raise ValueError("no such layer")
with warnings.catch_warnings(record=True) as said:
    warnings.simplefilter("always")
    done = ahead.compile_ahead(failing)
print(json.dumps({"done": done, "said": [str(w.message) for w in said]}))
""", cache)
    assert found["done"] is False
    assert found["said"] == ["compiling the kernels ahead failed (ValueError: no such layer); they compile at "
                             "their first launch instead"]


def _binary_counts() -> dict:
    from alexspec.kernels.ops import conv_triton, maxpool
    import importlib

    lrn_module = importlib.import_module("alexspec.kernels.ops.lrn")
    tuners = [conv_triton._conv_forward_kernel, conv_triton._conv_weight_grad_kernel, lrn_module._lrn_forward_kernel,
              lrn_module._lrn_backward_kernel, maxpool._max_pool_forward_kernel, maxpool._max_pool_backward_kernel]
    return {t.fn.__name__: sum(len(cache[0]) for cache in t.fn.device_caches.values()) for t in tuners}


@pytest.mark.gpu
def test_on_a_gpu_the_first_step_finds_every_kernel_compiled_and_computes_as_torch(tmp_path):
    from alexspec.builder import build

    spec = tmp_path / "towers.yaml"
    spec.write_text(TINY_TOWERS)
    torch.manual_seed(0)
    ours = build(str(spec), backend="triton", devices=["cuda"]).module
    reference = build(str(spec), backend="torch", devices=["cuda"]).module
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(32, 1, 8, 8, device="cuda")
    assert ahead.compile_module_ahead(ours, x)
    compiled = _binary_counts()
    assert all(count >= 1 for count in compiled.values()), compiled
    for module in (ours, reference):
        torch.manual_seed(1)
        module(x).square().sum().backward()
    assert _binary_counts() == compiled  # the real step compiled nothing more
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)  # nothing left of the dry run
    for (name, p), q in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.gpu
def test_on_a_gpu_the_backward_of_the_dry_step_compiles_in_the_pool(tmp_path):
    from triton.runtime import _async_compile

    from alexspec.builder import build

    spec = tmp_path / "towers.yaml"
    spec.write_text(TINY_TOWERS)
    module = build(str(spec), backend="triton", devices=["cuda"]).module
    x = torch.randn(32, 1, 8, 8, device="cuda", requires_grad=True)
    seen = []
    x.register_hook(lambda grad: seen.append(_async_compile.active_mode.get() is not None))
    assert ahead.compile_module_ahead(module, x)
    assert seen == [True]
