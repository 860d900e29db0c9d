"""Registers, spills, shared memory and instructions of every kernel binary a step compiles, on a CPU.

    python bench/kernel_resources.py [SPEC] [--batch 16] [--precision bf16|fp32] [--arch 90]
                                     [--kernel NAME] [--fuse-conv-lrn] [--out FILE]

Compiles every autotune config of every Triton kernel one training step of SPEC launches, for
a CUDA GPU of compute capability --arch, with no GPU (as bench/compile_cost.py does), then
reads each binary with the cuobjdump that ships with triton: registers a thread, bytes a thread
spills to local memory, shared memory a block, machine instructions (a loop's body counted
once), and the warps an SM can keep resident with them (at most 64). A memory-bound kernel
(LRN, pooling) needs many resident warps to keep enough loads in flight; a config that spills,
or fits one block on an SM, is rarely the fastest. `--out` writes the table as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compile_cost  # noqa: E402  (a sibling script)

BLOCK_PREFIX = "BLOCK_"


def compiled_step(spec: str, batch: int, precision: str, arch: int, fuse_conv_lrn: bool = False) -> list[dict]:
    """One row per binary the step compiled: kernel, its other compile-time constants (the
    shape), its config, and its resources."""
    import torch

    from alexspec.kernels.tuning import ahead
    from alexspec.kernels.tuning.resources import compiled_binaries, resources

    compile_cost._fully_connected_in_fp32()
    with ahead.stand_in_gpu(arch):
        module, x = compile_cost.step_inputs(spec, batch, precision, fuse_conv_lrn)
        if not ahead.compile_module_ahead(module, x, torch.bfloat16 if precision == "bf16" else None):
            raise RuntimeError("compiling the step failed (see the warning above)")
    rows = []
    for tuner in compile_cost._tuners():
        for constants, kernel in compiled_binaries(tuner.fn):
            used = resources(kernel)
            config = {k: v for k, v in constants.items() if k.startswith(BLOCK_PREFIX) or k.startswith("num_")}
            shape = {k: v for k, v in constants.items() if k not in config}
            rows.append({"kernel": kernel.name, "shape": shape, "config": config, "registers": used.registers,
                         "spilled_bytes": used.spilled_bytes, "shared_kb": round(used.shared_bytes / 1024, 1),
                         "instructions": used.instructions, "resident_warps": used.resident_warps})
    return sorted(rows, key=lambda r: (r["kernel"], str(r["shape"]), str(r["config"])))


def print_table(rows: list[dict]) -> None:
    shape_of = None
    for row in rows:
        if (row["kernel"], row["shape"]) != shape_of:
            shape_of = row["kernel"], row["shape"]
            shape = " ".join(f"{k}={v}" for k, v in row["shape"].items())
            print(f"\n{row['kernel']}  {shape}")
            print(f"  {'config':<44} {'regs':>5} {'spill B':>8} {'smem KB':>8} {'instrs':>7} {'warps/SM':>9}")
        config = " ".join(f"{k.removeprefix(BLOCK_PREFIX)}={v}" for k, v in row["config"].items())
        flag = "  <- spills" if row["spilled_bytes"] else ""
        print(f"  {config:<44} {row['registers']:>5} {row['spilled_bytes']:>8} {row['shared_kb']:>8} "
              f"{row['instructions']:>7} {row['resident_warps']:>9}{flag}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=str(compile_cost.SPEC))
    parser.add_argument("--batch", type=int, default=16,
                        help="batch size (default 16: any multiple of 16 compiles the same binaries)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability to compile for (default 90)")
    parser.add_argument("--kernel", help="only the binaries of kernels whose name contains this")
    parser.add_argument("--fuse-conv-lrn", action="store_true",
                        help="the step of the module compiled with --fuse-conv-lrn (its conv + LRN kernels)")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: this compiles the kernels (on CPU, for a GPU that is not there)")
    compile_cost.check_spec(parser, args.spec)
    rows = compiled_step(args.spec, args.batch, args.precision, args.arch, args.fuse_conv_lrn)
    rows = [r for r in rows if args.kernel is None or args.kernel in r["kernel"]]
    print_table(rows)
    spilling = [r for r in rows if r["spilled_bytes"]]
    print(f"\n{len(rows)} binaries for sm_{args.arch}, {len(spilling)} spilling registers")
    if args.out:
        Path(args.out).write_text(json.dumps({"arch": args.arch, "precision": args.precision, "rows": rows},
                                             indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
