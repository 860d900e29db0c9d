"""Which autotune config won for each kernel shape, read from a Triton cache after a GPU run.

    python bench/autotune_choices.py CACHE_DIR --out FILE.json

Triton keeps each autotuned launch's timings (`<kernel>.autotune.json`, one per key) in its cache,
and alexspec its Triton-or-cuDNN conv choices (alexspec-conv-choices.json) beside them; this
gathers both into one JSON to commit under bench/results/, so which configs win on a GPU (and
which never do) is known without one.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def gather(cache: Path) -> dict:
    """{"autotune": [{kernel, key, best, timings_ms}], "conv_choices": {...}, "gpu": {...}} from `cache`."""
    tuned = []
    for path in sorted(cache.rglob("*.autotune.json")):
        record = json.loads(path.read_text())
        timings = [(config, times[0] if isinstance(times, list) else times)
                   for config, times in record["configs_timings"]]
        best = min(timings, key=lambda pair: pair[1])[0]
        tuned.append({"kernel": path.name.removesuffix(".autotune.json"), "key": record["key"], "best": best,
                      "timings_ms": [{"config": config, "ms": ms} for config, ms in timings]})
    choices = cache / "alexspec-conv-choices.json"
    return {"autotune": sorted(tuned, key=lambda t: (t["kernel"], str(t["key"]))),
            "conv_choices": json.loads(choices.read_text()) if choices.exists() else {}, **this_gpu()}


def this_gpu() -> dict:
    """{"gpu": {name, compute_capability, multiprocessors}} of this machine's GPU (the run's, as
    gpu-run.sh gathers on the machine that ran it; bench/pretune.py keeps them, so that the
    table serves that GPU's siblings too), or {} without one."""
    try:
        import torch
        if not torch.cuda.is_available():
            return {}
        found = torch.cuda.get_device_properties(torch.cuda.current_device())
    except (ImportError, RuntimeError):
        return {}
    return {"gpu": {"name": found.name, "compute_capability": f"{found.major}.{found.minor}",
                    "multiprocessors": found.multi_processor_count}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path, help="the Triton cache folder (TRITON_CACHE_DIR) of the run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    found = gather(args.cache)
    args.out.write_text(json.dumps(found, indent=1, default=str) + "\n")
    print(f"{len(found['autotune'])} autotuned launches and {len(found['conv_choices'])} conv choices -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
