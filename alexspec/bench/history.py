"""`alexspec bench --history`: the benchmark runs kept in bench/results/ as a headline table,
a table of every run, and a plot of images/s over the runs."""
from __future__ import annotations

import json
from pathlib import Path

from alexspec.bench.baselines import BASELINES, describe_settings
from alexspec.plotting import pyplot, save

KINDS = ("alexspec", *BASELINES)
# What runs recorded before baselines carried their settings ran with: no CUDA graphs, SGD unfused.
_LEGACY = {"cuda_graphs": None, "optimizer": "SGD (unfused)"}


def load(folder: Path) -> tuple[list[dict], list[str]]:
    """(runs of `alexspec bench` in `folder`, oldest first; one line per file that is not one)."""
    runs, skipped = [], []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            skipped.append(f"{path}: not readable JSON ({exc})")
            continue
        if isinstance(data, dict) and (isinstance(data.get("results"), list) or isinstance(data.get("autotune"), list)):
            continue  # bench/kernels.py's per-kernel report or bench/autotune_choices.py's record, kept beside the runs
        if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or "date" not in data:
            skipped.append(f"{path}: not an `alexspec bench` result (no results/date)")
            continue
        runs.append({**data, "file": path.name})
    runs.sort(key=lambda run: (str(run["date"]), run["file"]))
    return runs, skipped


def _ratio(run: dict, kind: str, what: str) -> str:
    value = run["results"].get(kind, {}).get(f"alexspec_{what}_speedup")
    return f"x{value:.2f}" if isinstance(value, (int, float)) else "-"


def _sort(run: dict) -> tuple:
    """What a run measured: its baselines (and their mode), start-up or not, its autotuning."""
    return tuple(sorted(run["results"])), bool(run.get("max_autotune")), "startup" in run, run.get("autotune")


def latest(runs: list[dict]) -> list[dict]:
    """The newest run of each sort (say, one against torch.compile's default mode, one against
    max-autotune, one timing start-up) of the newest date, on the newest run's device."""
    newest = runs[-1]
    today = [run for run in runs if run["date"] == newest["date"] and run.get("device") == newest.get("device")]
    last = {_sort(run): run for run in today}  # runs are oldest first: the last of a sort wins
    return [run for run in today if last[_sort(run)] is run]


def _label(run: dict, kind: str) -> str:
    legacy_max_autotune = kind == "compile" and run.get("max_autotune") and "settings" not in run["results"][kind]
    return "compile (max-autotune)" if legacy_max_autotune else kind


def _settings(run: dict, kind: str, what: str = "train") -> str:
    """How a row ran, in words (for runs that did not record it, what those runs did); for
    inference (`what` infer), without the optimizer."""
    if kind == "alexspec":
        return ""
    result = run["results"][kind]
    if "settings" in result:
        return describe_settings(result["settings"], what)
    mode = ("max-autotune-no-cudagraphs" if run.get("max_autotune") else "default") if kind == "compile" else "eager"
    return describe_settings({"mode": mode, **_LEGACY}, what)


def headline(run: dict) -> str:
    """A run as a markdown table: img/s, ratio of alexspec to each baseline, first step."""
    lines = [f"{run.get('device', '?')}, {run.get('date')}, {run.get('precision')} batch {run.get('batch')}, "
             f"torch {run.get('torch')}, triton {run.get('triton')} ({run['file']}"
             f"{'; interrupted: only what it timed' if run.get('complete') is False else ''})", "",
             "| | training img/s | inference img/s | alexspec is (train / infer) | first step | how it ran |",
             "|---|---:|---:|---|---:|---|"]
    for kind in KINDS:
        result = run["results"].get(kind)
        if not result or "train_img_s" not in result:
            continue
        ratio = "" if kind == "alexspec" else f"{_ratio(run, kind, 'train')} / {_ratio(run, kind, 'infer')}"
        lines.append(f"| {_label(run, kind)} | {result['train_img_s']:,.0f} | {result['infer_img_s']:,.0f} | "
                     f"{ratio} | {result['first_step_s']:.1f} s | {_settings(run, kind)} |")
    for what, said in run.get("headline", {}).items():
        if said["baseline"] not in run["results"]:
            continue
        lines.append(f"\nheadline, {'training' if what == 'train' else 'inference'}: x{said['speedup']:.2f} the "
                     f"strongest baseline, {said['baseline']} ({_settings(run, said['baseline'], what)})")
    startup = run.get("startup", {})
    if {"cold_cache", "warm_cache"} <= set(startup):
        shipped = startup["cold_cache"].get("shipped_table")
        lines.append(f"\nspec to warm module in a fresh process: {startup['cold_cache']['spec_to_warm_module_s']:.1f} s "
                     f"with an empty Triton cache{f' and the choices shipped for {shipped}' if shipped else ''}, "
                     f"{startup['warm_cache']['spec_to_warm_module_s']:.1f} s with a warm one")
        if "cold_cache_layer_by_layer" in startup:
            lines[-1] += (f" ({startup['cold_cache_layer_by_layer']['spec_to_warm_module_s']:.1f} s empty compiling "
                          "layer by layer, ALEXSPEC_COMPILE_AHEAD=0)")
        if "cold_cache_without_shipped_choices" in startup:
            lines[-1] += (f"; {startup['cold_cache_without_shipped_choices']['spec_to_warm_module_s']:.1f} s empty "
                          "timing every choice here (ALEXSPEC_PRETUNED=0)")
    return "\n".join(lines) + "\n"


def _versus(run: dict, what: str) -> str:
    """alexspec's ratio to the run's strongest baseline (older runs: to torch.compile, without CUDA graphs)."""
    said = run.get("headline", {}).get(what)
    if said:
        return f"x{said['speedup']:.2f} {said['baseline']}"
    value = _ratio(run, "compile", what)
    mode = " (max-autotune)" if run.get("max_autotune") else ""
    return f"{value} compile{mode}, no CUDA graphs" if value != "-" else "-"


def history(runs: list[dict]) -> str:
    """Every run, one markdown row each."""
    lines = ["| date | device | precision, batch | alexspec train img/s | vs the strongest baseline | "
             "alexspec infer img/s | vs the strongest baseline | levers |", "|---|---|---|---:|---|---:|---|---|"]
    for run in runs:
        ours = run["results"].get("alexspec", {})
        lines.append(f"| {run['date']} | {run.get('device', '?')} | {run.get('precision')}, {run.get('batch')} | "
                     f"{ours.get('train_img_s', 0):,.0f} | {_versus(run, 'train')} | "
                     f"{ours.get('infer_img_s', 0):,.0f} | {_versus(run, 'infer')} | "
                     f"{', '.join(run.get('levers_on', [])) or '-'} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], out: Path) -> Path:
    """Training and inference img/s of alexspec and each baseline over the runs, as a PNG."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    labels = [f"{Path(run['file']).stem.removeprefix('bench-')}\n{run.get('device', '?')[:16]}" for run in runs]
    for ax, what in zip(axes, ("train", "infer")):
        for kind in KINDS:
            points = [(i, run["results"][kind][f"{what}_img_s"]) for i, run in enumerate(runs)
                      if f"{what}_img_s" in run["results"].get(kind, {})]
            if points:
                ax.plot([i for i, _ in points], [v for _, v in points], "o-", label=kind)
        ax.set(title=f"{'training' if what == 'train' else 'inference'} images/s", ylim=(0, None))
        ax.set_xticks(range(len(runs)), labels, fontsize=7)
        ax.legend()
    return save(fig, out)
