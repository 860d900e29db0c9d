"""The PyTorch baselines `alexspec bench` times alexspec against, and how their figures are compared.

Each baseline runs the same network as a user who wants speed would run it in PyTorch (the
torch backend, the same weights, the same inputs): eager, with torch's default SGD and with fused
SGD; eager with the whole step captured as a CUDA graph and fused SGD; torch.compile default,
reduce-overhead and max-autotune, with fused SGD and their own CUDA graphs. The headline is the
ratio to the strongest of them.
"""
from __future__ import annotations

import statistics

from alexspec.errors import BadInput


# The baselines, each as a user who wants speed would run the network in PyTorch. compile: torch.compile's
# mode (None: eager); cuda_graphs: "step" (the whole training step, and the forward pass, captured as CUDA
# graphs, as alexspec's are), "inductor" (torch.compile's own CUDA graphs of what it compiles) or None;
# fused_sgd: torch.optim.SGD(fused=True), else its default (foreach) implementation.
BASELINES = {
    "eager": {"compile": None, "cuda_graphs": None, "fused_sgd": False},
    "eager-fused": {"compile": None, "cuda_graphs": None, "fused_sgd": True},
    "eager-graphed": {"compile": None, "cuda_graphs": "step", "fused_sgd": True},
    "compile": {"compile": "default", "cuda_graphs": None, "fused_sgd": True},
    "compile-reduce-overhead": {"compile": "reduce-overhead", "cuda_graphs": "inductor", "fused_sgd": True},
    "compile-max-autotune": {"compile": "max-autotune", "cuda_graphs": "inductor", "fused_sgd": True},
}


SLOW_TO_COMPILE = ("compile-max-autotune",)  # minutes of autotuning: only with --max-autotune


def defaults(cuda: bool) -> dict:
    """Batch, timed steps, repeats and precision when the command line names none: AlexNet's batch 256
    in bf16 on a GPU; on a CPU a small batch in fp32 (what `alexspec train` runs there), timed seven
    times (its timings move more)."""
    if cuda:
        return {"batch": 256, "steps": 20, "repeats": 1, "precision": "bf16"}
    return {"batch": 8, "steps": 2, "repeats": 7, "precision": "fp32"}


def default_baselines(cuda: bool, max_autotune: bool) -> list[str]:
    """The baselines `alexspec bench` compares with when --compare is not given: on a GPU all of them
    (max-autotune with --max-autotune); on CPU eager, with either SGD (see cpu_note)."""
    if not cuda:
        return ["eager", "eager-fused"]
    return [name for name in BASELINES if name not in SLOW_TO_COMPILE or max_autotune]


def cpu_note() -> str:
    return ("on CPU alexspec runs the torch backend (the Triton kernels need a GPU), CUDA graphs need CUDA, and "
            "torch.compile spends minutes compiling: comparing with eager only, with torch's default SGD and "
            "with SGD(fused=True) as alexspec steps (--compare eager,compile times torch.compile too)")


def parse_baselines(text: str) -> list[str]:
    """--compare's comma-separated baseline names; BadInput for one that is not a baseline."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise BadInput(f"--compare takes baselines among {', '.join(BASELINES)}; {', '.join(unknown)} is not one")
    return names


def strongest(results: dict, what: str) -> str | None:
    """The baseline in `results` with the most images/s for `what` (train or infer)."""
    measured = [name for name in BASELINES if f"{what}_img_s" in results.get(name, {})]
    return max(measured, key=lambda name: results[name][f"{what}_img_s"], default=None)


def describe_settings(ran: dict, what: str = "train") -> str:
    """A baseline's settings in words, e.g. `torch.compile reduce-overhead, its CUDA graphs, SGD(fused=True)`;
    for inference (`what` infer), without the optimizer, which it does not run."""
    mode = f"torch.compile {ran['mode']}" if ran["mode"] != "eager" else "eager"
    graphs = {"step": "the whole step as a CUDA graph", "inductor": "its own CUDA graphs"}.get(ran["cuda_graphs"],
                                                                                              "no CUDA graphs")
    return f"{mode}, {graphs}" + (f", {ran['optimizer']}" if what == "train" else "")


def headline(results: dict) -> dict:
    """For training and inference: the strongest baseline measured and alexspec's ratio to it."""
    said = {}
    for what in ("train", "infer"):
        best = strongest(results, what)
        if best is not None and "alexspec" in results:
            said[what] = {"baseline": best, "speedup": results[best][f"alexspec_{what}_speedup"]}
    return said


def optimizer_name(fused: bool, weight_copies: bool = False) -> str:
    if fused and weight_copies:
        return "SGD on bf16 weight copies (one kernel a weight)"
    return "SGD(fused=True)" if fused else "SGD (torch's default, foreach)"


def rate(result: dict, what: str) -> str:
    """`12,345.6 img/s`, with the range of the repeated timings when there were several."""
    text = f"{result[f'{what}_img_s']:>10,.1f} img/s"
    if f"{what}_img_s_range" in result:
        low, high = result[f"{what}_img_s_range"]
        text += f" (median of {result['repeats']}: {low:,.0f}-{high:,.0f})"
    return text


def speedups(ours: dict, other: dict) -> dict:
    """train_speedup and infer_speedup: our images/s over another run's. Where the two were timed in
    interleaved rounds (`*_img_s_rounds`, on a CPU), the median of each round's ratio and the range of
    those ratios: a round's two timings are seconds apart, so the machine's drift over the run cancels.
    Otherwise the ratio of the medians and, where both were timed repeatedly, the range it can take
    within their timings' ranges."""
    found = {}
    for what in ("train", "infer"):
        rounds = f"{what}_img_s_rounds"
        if rounds in ours and rounds in other:
            ratios = [a / b for a, b in zip(ours[rounds], other[rounds], strict=True)]
            found[f"{what}_speedup"] = round(statistics.median(ratios), 3)
            if len(ratios) > 1:  # one round: a ratio, no range
                found[f"{what}_speedup_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
            continue
        found[f"{what}_speedup"] = round(ours[f"{what}_img_s"] / other[f"{what}_img_s"], 3)
        if f"{what}_img_s_range" in ours and f"{what}_img_s_range" in other:
            (low, high), (other_low, other_high) = ours[f"{what}_img_s_range"], other[f"{what}_img_s_range"]
            found[f"{what}_speedup_range"] = [round(low / other_high, 3), round(high / other_low, 3)]
    return found


def ratio_text(result: dict, what: str) -> str:
    """x1.23, with the range it took over interleaved rounds (x1.10-x1.30 in 3 rounds), or can take
    within the timings' ranges, where the timings were repeated."""
    text = f"x{result[f'alexspec_{what}_speedup']}"
    if f"alexspec_{what}_speedup_range" in result:
        low, high = result[f"alexspec_{what}_speedup_range"]
        rounds = result.get(f"{what}_img_s_rounds")
        where = f"in {len(rounds)} interleaved rounds" if rounds else "within the timings' ranges"
        text += f" (x{low}-x{high} {where})"
    return text


def plan(cuda: bool, batch: int | None = None, steps: int | None = None, repeats: int | None = None,
         compare: str | None = None, max_autotune: bool = False, precision: str | None = None) -> dict:
    """What a `alexspec bench` run times where the command line leaves it open: batch, steps,
    repeats and precision (defaults), the baselines (default_baselines, or --compare's, max-autotune added with
    --max-autotune) and a note to print (None: nothing to say)."""
    default = defaults(cuda)
    names = default_baselines(cuda, max_autotune) if compare is None else parse_baselines(compare)
    if max_autotune and "compile-max-autotune" not in names:
        names.append("compile-max-autotune")
    return {"batch": batch or default["batch"], "steps": steps or default["steps"],
            "repeats": repeats or default["repeats"], "precision": precision or default["precision"],
            "compare": names,
            "note": cpu_note() if compare is None and not cuda else None}
