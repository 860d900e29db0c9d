"""Make the choices shipped for a GPU model (kernels/tuning/gpu-choices/<model>.json) from a GPU run.

    python bench/pretune.py bench/results/autotune-DATE.json [--device "NVIDIA H100 80GB HBM3"]
                            [--compute-capability 9.0 --multiprocessors 132]

The input is what bench/autotune_choices.py gathered from the Triton cache of an
`alexspec bench` run (bench/gpu-run.sh's bench stage writes it): each autotuned kernel shape's
winning config and each conv shape's Triton-or-cuDNN choice. The output replaces that model's
table; a cold start on that model then compiles only the winning configs and times nothing
where the table has the shape (alexspec.kernels.tuning.pretuned). With the GPU's compute capability and
multiprocessor count (the record's "gpu", which autotune_choices.py writes on the GPU's machine,
or the options), the table also serves sibling models that have no table of their own.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def devices_in(record: dict) -> set[str]:
    """The GPU models the record's conv choices were timed on."""
    from alexspec.kernels.tuning import pretuned

    return {pretuned.split_stored_choice(stored_as)[0] for stored_as in record.get("conv_choices", {})}


def main(argv: list[str] | None = None) -> int:
    from alexspec.fsutil import write_atomic
    from alexspec.kernels.tuning import pretuned

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", type=Path, help="an autotune-DATE.json of bench/results")
    parser.add_argument("--device", help="the GPU model it was timed on (default: the one its conv choices name)")
    parser.add_argument("--compute-capability", metavar="MAJOR.MINOR",
                        help="the GPU's CUDA compute capability (default: the record's)")
    parser.add_argument("--multiprocessors", type=int, metavar="SMS",
                        help="the GPU's multiprocessor (SM) count (default: the record's)")
    args = parser.parse_args(argv)
    try:
        record = json.loads(args.record.read_text())
    except (OSError, ValueError) as exc:
        parser.exit(2, f"{args.record}: cannot read it as JSON ({exc})\n")
    if not isinstance(record, dict) or not isinstance(record.get("autotune"), list):
        parser.exit(2, f"{args.record}: not an autotune record (no \"autotune\" list); make one with "
                       "bench/autotune_choices.py\n")
    device = args.device
    if device is None:
        found = devices_in(record)
        if len(found) != 1:
            parser.exit(2, f"{args.record}: its conv choices name {len(found)} GPU models "
                           f"({', '.join(sorted(found)) or 'none'}); say which with --device\n")
        device = found.pop()
    gpu = record.get("gpu") if isinstance(record.get("gpu"), dict) and record["gpu"].get("name") == device else {}
    capability = args.compute_capability or gpu.get("compute_capability")
    multiprocessors = args.multiprocessors or gpu.get("multiprocessors")
    if capability is not None and not re.fullmatch(r"\d+\.\d+", str(capability)):
        parser.exit(2, f"--compute-capability {capability}: not MAJOR.MINOR, say 9.0\n")
    table = pretuned.from_autotune_record(record, device, made_from=args.record.name,
                                          compute_capability=capability, multiprocessors=multiprocessors)
    out = pretuned.table_path(device)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(table, indent=1, sort_keys=True) + "\n")  # a reader never sees half a table
    launches = sum(len(entries) for entries in table["autotune"].values())
    print(f"{out}: {launches} autotuned kernel shapes and {len(table['conv'])} conv choices for {device}"
          + (f", and its siblings (compute capability {capability}, {multiprocessors} SMs)" if "multiprocessors" in table
             else "; it serves no sibling model (its compute capability and SM count are not known: "
                  "--compute-capability, --multiprocessors)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
