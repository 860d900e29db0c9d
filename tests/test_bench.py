"""`alexspec bench` runs end to end on CPU and records what a GPU run records (no timing asserted)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SPECS, run_cli

pytest.importorskip("torch")

QUICK = ("--steps", "1", "--min-time", "0", "--warmup", "0", "--batch", "4")  # checks the command, times nothing


def bench_json(out, *args):
    """Run `alexspec bench ARGS --out OUT`; (its result, the JSON it wrote)."""
    result = run_cli("bench", *args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text())


@pytest.mark.slow
def test_bench_on_cpu_writes_the_result(tmp_path):
    out = tmp_path / "bench.json"
    result, data = bench_json(out, "lenet5", "--precision", "fp32", "--compare", "eager", "--cold-start", *QUICK,
                              "--min-time", "0.05")
    assert "no CUDA device: benchmarking the torch backend on CPU" in result.stdout
    assert "profiler_start" not in result.stdout + result.stderr  # the profiler's own log stays off the console
    assert data["min_time_s"] == 0.05 and data["steps"] == 1
    assert all(data["results"][kind][f"{what}_steps"] >= 1
               for kind in ("alexspec", "eager") for what in ("train", "infer"))
    assert set(data["startup"]) == {"cold_cache", "warm_cache"}  # no layer-by-layer start without a GPU
    for name in ("cold_cache", "warm_cache"):  # each from a process of its own, timed from outside too
        start = data["startup"][name]
        assert start["spec_to_warm_module_s"] == pytest.approx(start["build_s"] + start["first_step_s"], abs=0.02)
        assert start["process_s"] >= start["import_s"] + start["spec_to_warm_module_s"] > 0
        assert start["compile_ahead_s"] is None  # the torch backend on CPU: no kernel to compile
        assert start["autotune_timing_s"] == 0 and start["conv_choice_timing_s"] == 0  # nor to time
        assert f"{name.replace('_', ' ')}: {start['spec_to_warm_module_s']:.1f} s" in result.stdout
    assert {"device", "torch", "triton", "date", "batch", "precision", "results", "profile"} <= set(data)
    assert set(data["results"]) == {"alexspec", "eager"}
    assert data["results"]["alexspec"]["train_img_s"] > 0 and data["results"]["eager"]["alexspec_train_speedup"] > 0
    assert data["profile"] and all(row["ms_per_step"] > 0 for row in data["profile"])
    assert sum(row["percent"] for row in data["profile"]) <= 100.5  # shares of one total, none counted twice
    top = data["profile"][0]
    assert "training step spends its time" in result.stdout and f"{top['ms_per_step']:7.3f} ms  {top['op']}" in result.stdout


@pytest.mark.slow
def test_cpu_figures(tmp_path):
    out = tmp_path / "cpu.json"
    _, data = bench_json(out, "--cpu-figures")
    figures = data["cpu_figures"]
    assert figures["compiler_imports_torch"] is False
    assert figures["report_wall_s"] > 0 and figures["validate_infer_1000_layers_s"] > 0


def test_bad_baseline_name():
    result = run_cli("bench", "lenet5", "--compare", "tensorflow")
    assert result.returncode == 2
    assert "--compare takes baselines among eager, eager-fused, eager-graphed" in result.stderr


def test_a_batch_of_one_that_a_batchnorm_of_features_cannot_take_is_refused_before_timing(tmp_path):
    spec = tmp_path / "bnf.yaml"  # digits with a batchnorm of fc3's 128 features: one value an image each
    spec.write_text((SPECS / "digits.yaml").read_text().replace(
        "  - {name: fc4,", "  - {name: bnf, type: batchnorm}\n  - {name: fc4,"))
    result = run_cli("bench", str(spec), "--batch", "1", "-o", str(tmp_path / "b.json"))
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == (
        "alexspec bench: --batch 1 is too small: bnf (batchnorm) normalises each feature over a batch's images, "
        "which takes 2 or more; give --batch 2 or more"), result.stderr  # before: an internal error
    assert not (tmp_path / "b.json").exists()
    result = run_cli("bench", "digits", "--batch", "1", *QUICK[:-2], "-o", str(tmp_path / "d.json"))
    assert result.returncode == 0 and (tmp_path / "d.json").exists(), result.stderr  # no such batchnorm: it can


@pytest.mark.parametrize("value, said", [("-1", "must be from 0 to 3600 seconds, got -1"),
                                         ("nan", "must be from 0 to 3600 seconds, got nan"),
                                         ("soon", "expected a number of seconds, got 'soon'")])
def test_a_bad_min_time_is_bad_input(value, said):
    result = run_cli("bench", "lenet5", "--min-time", value)
    assert result.returncode == 2 and f"--min-time: {said}" in result.stderr


def test_a_timing_runs_more_steps_where_steps_would_last_less_than_the_min_time(monkeypatch):
    from alexspec.bench import run as bench

    clock = {"now": 0.0, "calls": 0}

    def call():  # a step of 2 ms on a clock that moves only when a step runs
        clock["now"] += 0.002
        clock["calls"] += 1

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])
    timing = object.__new__(bench._Bench)
    timing.batch, timing.warmup, timing.repeats, timing.synchronize = 8, 2, 3, lambda: None
    timing.steps, timing.min_seconds = 5, 0.1
    steps, rates = timing._rates(call)
    assert steps == 50 and rates == pytest.approx([8 / 0.002] * 3)  # 50 steps of 2 ms: 0.1 s a timing
    assert clock["calls"] == 2 + 1 + 3 * 50  # warm-up, the one call that sizes a timing, the timings
    timing.steps = 80  # --steps that already last longer: exactly --steps
    assert timing._rates(call)[0] == 80
    timing.steps, timing.min_seconds = 5, 0  # no minimum: exactly --steps, and no sizing call
    clock["calls"] = 0
    assert timing._rates(call)[0] == 5 and clock["calls"] == 2 + 3 * 5


def test_on_a_cpu_every_candidate_is_timed_in_turn_in_each_round_and_on_a_gpu_one_after_another(monkeypatch):
    from alexspec.bench import run as bench

    calls = []

    class Module:
        def __init__(self, name):
            self.name = name

        def train(self):
            calls.append(f"{self.name}.train()")

        def eval(self):
            calls.append(f"{self.name}.eval()")

    def ready(kind, levers, label, profile_into):
        return bench._Ready(label, levers, Module(kind), lambda: calls.append(f"{kind} step"),
                            lambda: calls.append(f"{kind} infer"), 0.0, None)

    timing = object.__new__(bench._Bench)
    timing.cuda, timing.batch, timing.warmup, timing.repeats, timing.synchronize = False, 8, 1, 2, lambda: None
    timing.steps, timing.min_seconds, timing.log, timing.flops_per_image = 1, 0, lambda line: None, 1
    monkeypatch.setattr(timing, "_ready", ready)
    levers = {"triton_conv": False, "cuda_graphs": False}
    measured = dict(timing.measure_all([("a", levers, "a", None), ("b", levers, "b", None)]))
    in_turn = ["a.train()", "a step", "a.eval()", "a infer", "b.train()", "b step", "b.eval()", "b infer"]
    assert calls == in_turn * 3  # a's and b's warm-up call, then a and b in turn, round after round
    assert set(measured) == {"a", "b"} and len(measured["a"]["train_img_s_rounds"]) == 2

    calls.clear()  # on a GPU (stood in for): one candidate after another, each with the device to itself
    timing.cuda = True
    monkeypatch.setattr("torch.cuda.max_memory_allocated", lambda: 0)
    measured = dict(timing.measure_all([("a", levers, "a", None), ("b", levers, "b", None)]))
    def alone(kind):  # its warm-up call and two timings of the step, then of inference
        return [f"{kind} step"] * 3 + [f"{kind}.eval()"] + [f"{kind} infer"] * 3

    assert calls == alone("a") + alone("b")
    assert set(measured) == {"a", "b"} and "train_img_s_rounds" not in measured["a"]


def test_candidates_timed_in_the_same_rounds_compare_round_by_round():
    from alexspec.bench.baselines import ratio_text, speedups

    ours = {"train_img_s": 200, "infer_img_s": 10, "train_img_s_rounds": [100, 200, 300],
            "infer_img_s_rounds": [10, 10, 10]}
    other = {"train_img_s": 150, "infer_img_s": 10, "train_img_s_rounds": [50, 200, 150],
             "infer_img_s_rounds": [5, 10, 20]}
    found = speedups(ours, other)  # per round x2, x1, x2: not the medians' 200 / 150
    assert found == {"train_speedup": 2.0, "train_speedup_range": [1.0, 2.0],
                     "infer_speedup": 1.0, "infer_speedup_range": [0.5, 2.0]}
    said = ratio_text({**other, **{f"alexspec_{key}": value for key, value in found.items()}}, "train")
    assert said == "x2.0 (x1.0-x2.0 in 3 interleaved rounds)"
    apart = {key: value for key, value in other.items() if not key.endswith("_rounds")}  # timed on its own
    assert speedups(ours, apart)["train_speedup"] == round(200 / 150, 3)
    one_round = speedups({**ours, "train_img_s_rounds": [300]}, {**other, "train_img_s_rounds": [150]})
    assert one_round["train_speedup"] == 2.0 and "train_speedup_range" not in one_round  # no range of one
    assert ratio_text({**other, **{f"alexspec_{key}": value for key, value in one_round.items()}}, "train") == "x2.0"


@pytest.mark.slow
def test_ablation_records_each_lever_it_could_turn_off(tmp_path):
    out = tmp_path / "bench.json"
    result, data = bench_json(out, "lenet5", "--compare", "", "--precision", "bf16", *QUICK, "--ablate")
    # bf16's levers; no CUDA graphs on CPU
    assert data["levers_on"] == ["fusion", "channels_last", "fused_optimizer", "weight_copies"]
    for name in ("cuda_graphs", "triton_conv"):
        assert data["levers"][name] == {"on": False, "why": "needs CUDA"}
    opt_in = data["levers"]["lrn_pool_fusion"]  # off by default, timed turned on
    assert opt_in["on"] is False and "alexspec with lrn_pool_fusion" in result.stdout
    assert data["levers"]["conv_lrn_fusion"]["on"] is False and "alexspec with conv_lrn_fusion" in result.stdout
    # on CPU each variant is timed in rounds with alexspec timed again (every default lever), round by round
    assert opt_in["train_speedup"] == paired_ratio(opt_in["with"], opt_in["alexspec_again"], "train")
    assert data["conv_choices"] == []  # the torch backend on CPU: no Triton convs to choose between
    for name in data["levers_on"]:
        lever = data["levers"][name]
        assert lever["train_speedup"] == paired_ratio(lever["alexspec_again"], lever["without"], "train")
        assert lever["infer_speedup"] == paired_ratio(lever["alexspec_again"], lever["without"], "infer")
        assert f"alexspec without {name}" in result.stdout


def paired_ratio(ours: dict, other: dict, what: str) -> float:
    """The median of the ratios of two candidates' images/s timed in the same rounds, as stored (3 decimals)."""
    ratios = [a / b for a, b in zip(ours[f"{what}_img_s_rounds"], other[f"{what}_img_s_rounds"], strict=True)]
    assert len(ratios) == len(ours[f"{what}_img_s_rounds"]) >= 1
    return round(statistics.median(ratios), 3)


@pytest.mark.gpu
def test_a_captured_training_step_replays_what_eager_steps_do():
    import torch

    from alexspec.bench.run import captured

    def trained(graphs: bool):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).cuda()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, fused=True)
        x, y = torch.randn(32, 8, device="cuda"), torch.randint(0, 4, (32,), device="cuda")

        def body():
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

        def zero():
            opt.zero_grad(set_to_none=True)

        if graphs:  # two warm-up steps update the weights; the capture itself runs nothing
            step = captured(body, zero, warmup=2)
        else:
            step = lambda: (zero(), body())  # noqa: E731
            step(), step()
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        return [p.detach().cpu() for p in net.parameters()]

    for eager, replayed in zip(trained(False), trained(True)):
        torch.testing.assert_close(replayed, eager)


@pytest.mark.slow
def test_history_summarises_the_runs_in_a_folder(tmp_path):
    results = tmp_path / "results"
    _, data = bench_json(results / "bench-a.json", "lenet5", "--precision", "fp32", "--compare", "eager", *QUICK)
    (results / "notes.json").write_text("{not json")
    ours, eager = data["results"]["alexspec"], data["results"]["eager"]
    legacy = {key: value for key, value in data.items() if key != "headline"}  # as runs before headlines were
    max_autotune = {**legacy, "max_autotune": True, "results": {"alexspec": ours, "compile": {
        key: value for key, value in eager.items() if key != "settings"} | {"train_img_s": 1}}}
    (results / "bench-b.json").write_text(json.dumps(max_autotune))  # same day and device: both are the latest
    (results / "bench-0.json").write_text(json.dumps({**data, "results": {**data["results"], "alexspec": {
        **ours, "train_img_s": 7.5e9}}}))  # the same sort as bench-a, run before it: not the latest
    (results / "kernels.json").write_text(json.dumps({"date": data["date"], "results": [{"op": "lrn"}]}))
    (results / "autotune.json").write_text(json.dumps({"autotune": [], "conv_choices": {}}))
    summary = run_cli("bench", "--history", str(results), "--plot", str(tmp_path / "h.png"))
    assert summary.returncode == 0, summary.stderr
    latest = summary.stdout.split("all runs:")[0]
    assert f"| alexspec | {ours['train_img_s']:,.0f} | {ours['infer_img_s']:,.0f} |" in latest
    assert f"x{eager['alexspec_train_speedup']:.2f} / x{eager['alexspec_infer_speedup']:.2f}" in latest
    assert "| eager |" in latest and "| eager | SGD (torch's default, foreach) |" not in latest
    assert "eager, no CUDA graphs, SGD (torch's default, foreach) |" in latest  # the run's own settings
    assert "| compile (max-autotune) | 1 |" in latest  # a run from before settings were recorded: what it did
    assert "torch.compile max-autotune-no-cudagraphs, no CUDA graphs, SGD (unfused) |" in latest
    assert f"headline, training: x{eager['alexspec_train_speedup']:.2f} the strongest baseline, eager" in latest
    assert "headline, inference: x" in latest and latest.split("headline, inference: x")[1].split("\n")[0] \
        .endswith("(eager, no CUDA graphs)")
    assert "7,500,000,000" not in latest and " | 7,500,000,000 | " in summary.stdout.split("all runs:")[1]
    assert "notes.json: not readable JSON" in summary.stderr
    assert "kernels.json" not in summary.stderr and "autotune.json" not in summary.stderr
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_never_replaces_an_earlier_run_that_day_or_a_file_of_another_kind(tmp_path, monkeypatch):
    import datetime

    from alexspec.cli.bench_command import _bench_out

    monkeypatch.chdir(tmp_path)
    day = datetime.date.today().isoformat()
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    assert _bench_out(None, cuda=True) == Path(f"bench/results/bench-{day}.json")
    for name in (f"bench-{day}.json", f"bench-{day}-2.json"):  # two runs earlier today: kept, not replaced
        (results / name).write_text("{}")
    assert _bench_out(None, cuda=True) == Path(f"bench/results/bench-{day}-3.json")
    assert _bench_out("mine.json", cuda=True) == Path("mine.json") and _bench_out(None, cuda=False) is None
    (tmp_path / "mine.py").write_text("source\n")
    result = run_cli("bench", "digits", "-o", "mine.py", cwd=tmp_path)
    assert result.returncode == 2 and "mine.py: the results are JSON; name it .json" in result.stderr
    assert (tmp_path / "mine.py").read_text() == "source\n"


def test_history_of_a_missing_folder_is_bad_input(tmp_path):
    result = run_cli("bench", "--history", str(tmp_path / "nope"))
    assert result.returncode == 2 and "no such folder of benchmark results" in result.stderr


@pytest.mark.slow
def test_gpu_run_script_refuses_unknown_stages_and_a_machine_without_cuda(tmp_path):
    import os

    env = {**os.environ, "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    script = str(ROOT / "bench" / "gpu-run.sh")
    unknown = subprocess.run(["bash", script, "tests", "speed"], env=env, capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown stage speed" in unknown.stderr
    bad_limit = subprocess.run(["bash", script, "tests:soon"], env=env, capture_output=True, text=True)
    assert bad_limit.returncode == 2 and "SECONDS must be a number" in bad_limit.stderr
    no_gpu = subprocess.run(["bash", script, "bench"], env=env, capture_output=True, text=True, timeout=300)
    assert no_gpu.returncode == 2 and "needs a CUDA GPU" in no_gpu.stderr


@pytest.mark.gpu
def test_the_alexspec_training_step_makes_no_host_syncs():
    import torch
    import torch.nn.functional as F

    import alexspec

    model = alexspec.compile(SPECS / "alexnet-1gpu.yaml", backend="triton", devices=["cuda"])
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, fused=True)
    x = torch.randn(8, 3, 227, 227, device="cuda").contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (8,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(out.float(), labels).backward()
        opt.step()

    step(), step()  # autotuning and compilation happen here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_bench_with_every_lever_on_a_gpu(tmp_path):
    out = tmp_path / "bench.json"
    _, data = bench_json(out, "digits", "--batch", "64", "--steps", "2", "--warmup", "1", "--compare", "eager",
                         "--ablate")
    assert data["cuda"] and data["levers_on"] == ["fusion", "channels_last", "fused_optimizer", "weight_copies",
                                                  "cuda_graphs", "triton_conv"]
    assert all(data["levers"][name]["train_speedup"] > 0 for name in data["levers_on"])
    assert 0 < data["results"]["alexspec"]["compile_ahead_s"] < data["results"]["alexspec"]["first_step_s"]
    choices = data["conv_choices"]  # digits has two convs; training and inference share their shapes
    assert len({entry["shape"] for entry in choices}) >= 2
    assert all(entry["implementation"] in {key[:-3] for key in entry if key.endswith("_ms")}
               and entry["triton_ms"] > 0 and entry["cudnn_ms"] > 0 for entry in choices)


def test_an_interrupted_run_keeps_what_it_timed(tmp_path):
    from alexspec.bench import run as bench
    from alexspec.cli import resolve_spec

    partials = []
    final = bench.run(resolve_spec("lenet5"), 4, "fp32", ["eager"], False, 1, 0, ablate=True, log=lambda line: None,
                      progress=lambda partial: partials.append(json.loads(json.dumps(partial))))
    assert [sorted(p["results"]) for p in partials[:2]] == [["alexspec"], ["alexspec", "eager"]]
    lever_counts = [len(p["levers"]) for p in partials[2:]]  # one more measured lever each time
    assert lever_counts and lever_counts == sorted(set(lever_counts)) and "fusion" in partials[2]["levers"]
    assert all(p["complete"] is False for p in partials) and final["complete"] is True
    assert final["results"]["eager"]["alexspec_train_speedup"] > 0 and "fusion" in final["levers"]

    from alexspec.bench import history as bench_history

    partials[0]["file"] = "bench-x.json"
    assert "interrupted: only what it timed" in bench_history.headline(partials[0])
    assert "interrupted" not in bench_history.headline({**final, "file": "bench-y.json"})


def test_a_start_up_run_headlines_its_cold_and_warm_times():
    from alexspec.bench import history as bench_history

    run = {"date": "2026-01-01", "file": "bench-s.json", "results": {}, "startup": {
        "cold_cache": {"spec_to_warm_module_s": 21.14}, "warm_cache": {"spec_to_warm_module_s": 6.93}}}
    assert "fresh process: 21.1 s with an empty Triton cache, 6.9 s with a warm one" in bench_history.headline(run)
    run["startup"]["cold_cache_layer_by_layer"] = {"spec_to_warm_module_s": 24.04}
    assert "6.9 s with a warm one (24.0 s empty compiling layer by layer, ALEXSPEC_COMPILE_AHEAD=0)" in \
        bench_history.headline(run)
    run["startup"]["cold_cache_without_shipped_choices"] = {"spec_to_warm_module_s": 27.74}
    assert "ALEXSPEC_COMPILE_AHEAD=0); 27.7 s empty timing every choice here (ALEXSPEC_PRETUNED=0)" in \
        bench_history.headline(run)
    run["startup"]["cold_cache"]["shipped_table"] = "NVIDIA H100 80GB HBM3"
    assert "fresh process: 21.1 s with an empty Triton cache and the choices shipped for NVIDIA H100 80GB HBM3, " \
           "6.9 s with a warm one" in bench_history.headline(run)


def test_a_profiled_first_step_names_the_functions_it_spent_its_time_in():
    from alexspec.bench.startup import describe_start, first_step

    figures = first_step(str(SPECS / "lenet5.yaml"), 2, "fp32", profile=True)
    phases = figures["first_step_phases_s"]
    assert list(phases) == ["making the optimizer", "compiling ahead", "forward", "backward", "optimizer step"]
    assert abs(sum(phases.values()) - figures["first_step_s"]) <= 0.05  # the phases make up the step
    own, total = figures["profile"]["own"], figures["profile"]["total"]
    assert len(own) == len(total) == 12
    assert [row["s"] for row in own] == sorted((row["s"] for row in own), reverse=True)
    assert total[0]["s"] <= figures["first_step_s"] + 0.05  # nothing outside the step is counted
    assert any("alexspec/train/step.py" in row["function"] for row in total)  # the step's own code, by file and line
    said = describe_start("warm_cache_profiled", figures)
    assert "where its first step went (cProfile, own time):" in said and own[0]["function"] in said
    assert "profile" not in first_step(str(SPECS / "lenet5.yaml"), 2, "fp32")


@pytest.mark.slow
def test_a_first_step_records_where_python_read_its_bytecode(tmp_path):
    # a process that writes no bytecode, where the packages have none, compiles their source
    # again: seconds for torch._dynamo, which the optimizer imports
    code = ("import json, sys; from alexspec.bench.startup import describe_start, first_step; "
            "figures = first_step(sys.argv[1], 2, 'fp32'); print(describe_start('cold_cache', figures)); "
            "print(json.dumps(figures['python_bytecode']))")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code, str(SPECS / "lenet5.yaml")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"written": False, "cache_prefix": str(tmp_path)}
    assert f"Python bytecode: read from {tmp_path}, none written (PYTHONDONTWRITEBYTECODE)" in done.stdout


def test_a_start_up_run_says_where_its_first_step_went():
    from alexspec.bench.startup import describe_start

    figures = {"spec_to_warm_module_s": 9.04, "build_s": 1.1, "first_step_s": 7.9, "import_s": 4.5,
               "compile_ahead_s": 3.2, "autotune_timing_s": 0.0, "conv_choice_timing_s": 0.0,
               "shipped_choices_taken": 40,
               "compiled_ahead": {"binaries": 17, "compile_s": 12.44, "launchers": 7, "launcher_s": 1.5,
                                  "threads": 16, "step_s": 1.2, "waiting_s": 2.0, "slowest_s": 2.1,
                                  "slowest": "conv_forward_kernel"},
               "first_step_phases_s": {"making the optimizer": 0.8, "compiling ahead": 3.2, "forward": 2.1,
                                       "backward": 1.6, "optimizer step": 0.2}}
    assert describe_start("cold_cache", figures).splitlines() == [
        "  cold cache: 9.0 s (build 1.1 s, first step 7.9 s of which compiling ahead 3.2 s; importing torch and "
        "alexspec 4.5 s before that)",
        "    compiling ahead: 17 binaries in 12.4 s summed over 16 threads (the slowest, conv_forward_kernel, 2.1 s), "
        "7 launchers in 1.5 s; the dry step 1.2 s, "
        "then 2.0 s waiting for the compilations",
        "    first step: making the optimizer 0.80 s, compiling ahead 3.20 s, forward 2.10 s, backward 1.60 s, "
        "optimizer step 0.20 s",
        "    40 choices taken from the table shipped for this GPU model"]
    on_a_sibling = {**figures, "device": "NVIDIA H200", "shipped_table": "NVIDIA H100 80GB HBM3"}
    assert describe_start("cold_cache", on_a_sibling).splitlines()[-1] == (
        "    40 choices taken from the table shipped for NVIDIA H100 80GB HBM3 (a sibling of this GPU: the same "
        "compute capability and SMs)")
    quiet = {key: figures[key] for key in ("spec_to_warm_module_s", "build_s", "first_step_s", "import_s")}
    assert describe_start("warm_cache", quiet).count("\n") == 0


@pytest.mark.slow
def test_autotune_choices_gathers_each_launchs_winner_from_a_triton_cache(tmp_path):
    # as triton's Autotuner.check_disk_cache writes them: the key, then (config.__dict__, timings) pairs
    entry = tmp_path / "ab12" / "_lrn_forward_kernel.autotune.json"
    entry.parent.mkdir()
    slow = {"kwargs": {"BLOCK_P": 32, "BLOCK_C": 32}, "num_warps": 4, "num_stages": 3}
    fast = {"kwargs": {"BLOCK_P": 64, "BLOCK_C": 64}, "num_warps": 4, "num_stages": 3}
    entry.write_text(json.dumps({"key": [96, 3025, 96, 1, 5, "torch.bfloat16"],
                                 "configs_timings": [[slow, [0.51, 0.5, 0.52]], [fast, [0.32, 0.31, 0.33]]]}))
    (tmp_path / "alexspec-conv-choices.json").write_text(json.dumps({"H100 | conv1": {"implementation": "triton"}}))
    out = tmp_path / "autotune.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "autotune_choices.py"), str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    found = json.loads(out.read_text())
    assert found["autotune"] == [{"kernel": "_lrn_forward_kernel", "key": [96, 3025, 96, 1, 5, "torch.bfloat16"],
                                  "best": fast, "timings_ms": [{"config": slow, "ms": 0.51},
                                                               {"config": fast, "ms": 0.32}]}]
    assert found["conv_choices"] == {"H100 | conv1": {"implementation": "triton"}}
    assert "1 autotuned launches and 1 conv choices" in done.stdout


@pytest.mark.slow
def test_each_baseline_records_how_it_ran_and_the_headline_names_the_strongest(tmp_path):
    result, data = bench_json(tmp_path / "b.json", "lenet5", "--precision", "fp32", "--compare",
                              "eager,eager-graphed", "--repeats", "3", *QUICK)
    eager, graphed = data["results"]["eager"], data["results"]["eager-graphed"]
    assert eager["settings"] == {"mode": "eager", "cuda_graphs": None, "optimizer": "SGD (torch's default, foreach)"}
    assert graphed == {"skipped": "needs CUDA (CUDA graphs)",
                       "settings": {"mode": "eager", "cuda_graphs": "step", "optimizer": "SGD(fused=True)"}}
    assert data["results"]["alexspec"]["settings"]["cuda_graphs"] is None  # none on CPU, on either side
    assert data["repeats"] == 3
    low, high = eager["train_img_s_range"]
    assert low <= eager["train_img_s"] <= high and "(median of 3: " in result.stdout
    ours = data["results"]["alexspec"]
    assert eager["train_img_s"] == statistics.median(eager["train_img_s_rounds"])
    ratios = [a / b for a, b in zip(ours["train_img_s_rounds"], eager["train_img_s_rounds"], strict=True)]
    assert eager["alexspec_train_speedup"] == paired_ratio(ours, eager, "train")
    assert eager["alexspec_train_speedup_range"] == [round(min(ratios), 3), round(max(ratios), 3)]
    assert "in 3 interleaved rounds" in result.stdout
    assert data["headline"]["train"] == {"baseline": "eager", "speedup": eager["alexspec_train_speedup"]}
    assert "headline, train: x" in result.stdout and "the strongest baseline, eager (eager, no CUDA graphs" in \
        result.stdout
    infer_headline = next(line for line in result.stdout.splitlines() if line.startswith("headline, infer: x"))
    assert infer_headline.endswith("(eager, no CUDA graphs)")  # no optimizer: inference runs none


@pytest.mark.slow
def test_on_cpu_the_default_comparison_says_why_it_leaves_torch_compile_out(tmp_path):
    result, data = bench_json(tmp_path / "b.json", "lenet5", "--steps", "1", "--warmup", "0")
    assert "torch.compile spends minutes compiling: comparing with eager only, with torch's default SGD and with " \
        "SGD(fused=True) as alexspec steps" in result.stdout
    assert set(data["results"]) == {"alexspec", "eager", "eager-fused"}  # alexspec's fused step is no lever of its own
    assert data["results"]["eager-fused"]["settings"] == {"mode": "eager", "cuda_graphs": None,
                                                          "optimizer": "SGD(fused=True)"}
    assert data["results"]["alexspec"]["settings"]["optimizer"] == "SGD(fused=True)"
    assert data["precision"] == "fp32"  # what `alexspec train` runs on a CPU, where bf16 is the GPU's default
    assert "channels_last" not in data["levers_on"] and "weight_copies" not in data["levers_on"]


def test_the_strongest_baseline_is_the_fastest_measured_one_for_each_figure():
    from alexspec.bench.baselines import headline, strongest

    results = {"alexspec": {"train_img_s": 100, "infer_img_s": 300},
               "eager": {"train_img_s": 10, "infer_img_s": 30, "alexspec_train_speedup": 10.0,
                         "alexspec_infer_speedup": 10.0},
               "compile": {"train_img_s": 50, "infer_img_s": 20, "alexspec_train_speedup": 2.0,
                           "alexspec_infer_speedup": 15.0},
               "eager-graphed": {"skipped": "needs CUDA (CUDA graphs)"}}
    assert strongest(results, "train") == "compile" and strongest(results, "infer") == "eager"
    assert headline(results) == {"train": {"baseline": "compile", "speedup": 2.0},
                                 "infer": {"baseline": "eager", "speedup": 10.0}}
