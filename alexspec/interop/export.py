"""`alexspec export`: a trained spec for inference elsewhere.

torch-export keeps the Triton ops as the registered custom ops (torch.ops.alexspec.*), so the
program runs wherever alexspec is installed; ONNX lowers everything to standard ops (the torch
backend, LRN through PyTorch's LocalResponseNorm decomposition).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
import warnings

from alexspec.builder import build, load_state
from alexspec.errors import BadInput
from alexspec.fold import fold_batchnorm
from alexspec.fsutil import write_atomic
from alexspec.words import count, listed


FORMATS_BY_SUFFIX = {".pt2": "torch-export", ".onnx": "onnx"}
CLASSES_FILE = "classes.json"  # torch-export: an extra file of the .pt2 (torch.export.load(extra_files=...))
CLASSES_KEY = "classes"        # ONNX: a metadata entry


def format_for(out: Path, given: str | None = None) -> str:
    """The export format: `given` (--format), else the one the file's name asks for. BadInput where
    the name asks for none, or has another suffix than the format's (a file of another kind,
    a model's source say, would be replaced)."""
    named = FORMATS_BY_SUFFIX.get(out.suffix.lower())
    if given is None and named is None:
        raise BadInput(f"{out}: say the format with --format torch-export or onnx, or name the file .pt2 or .onnx")
    if given is not None and out.suffix and named != given:
        suffix = next(key for key, fmt in FORMATS_BY_SUFFIX.items() if fmt == given)
        what = {"onnx": "an ONNX model", "torch-export": "a torch.export program"}[given]
        raise BadInput(f"{out}: {what} is named {suffix}, not {out.suffix} (a file of another kind there would be "
                       f"replaced); name it {out.stem}{suffix}")
    return given or named


def export(spec, checkpoint_path: Path | None, fmt: str, out: Path, backend: str = "auto",
           devices=("cpu",), batch: int = 2, log=lambda line: None) -> Path:
    """Write the exported program (or ONNX model) to `out`, its batch size dynamic (any number of
    images; traced with `batch`, at least 2, since an exporter takes a size of 1 for a constant),
    each batchnorm after a conv folded into it (alexspec.fold); returns it."""
    import torch

    from alexspec.train import checkpoint

    built = build(spec, "torch" if fmt == "onnx" else backend, list(devices))
    classes = None
    if checkpoint_path is not None:
        state = checkpoint.load(checkpoint.in_run_folder(checkpoint_path), checkpoint.network_hash(built.info))
        load_state(built.module, state["model"])
        classes = state.get("classes")  # the names of the data's labels, where the run recorded them
    module = built.module.eval()
    folded = fold_batchnorm(built)
    if folded:
        log(f"folded {count(len(folded), 'batchnorm')} into the conv before it ({', '.join(n for _, n in folded[:4])}"
            f"{', ...' if len(folded) > 4 else ''})")
    example = torch.randn(max(batch, 2), *built.info.network.input, device=devices[0])
    exported = io.BytesIO()  # written whole, then put in place: a failed export leaves no half a file
    if fmt == "torch-export":
        # the batch stays a symbol (an error if anything fixed it); the Triton ops' checks make the
        # exporter note sizes from 2, and the program still runs a single image
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
        torch.export.save(program, exported, extra_files={CLASSES_FILE: json.dumps(classes)} if classes else None)
    elif fmt == "onnx":
        with warnings.catch_warnings():
            # the exporter cannot fold the reversed pad list of the LRN's F.pad (a Slice of step -1) into a
            # constant, and says so thrice; the model computes the same (tests/test_interop.py)
            warnings.filterwarnings("ignore", "Constant folding - Only steps=1 can be constant folded", UserWarning)
            torch.onnx.export(module, (example,), exported, input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        if classes:
            exported = io.BytesIO(_with_onnx_metadata(exported.getvalue(), CLASSES_KEY, json.dumps(classes)))
    else:
        raise BadInput(f"--format must be torch-export or onnx, got {fmt!r}")
    write_atomic(out, exported.getvalue())
    if classes:
        where = f"extra file {CLASSES_FILE}" if fmt == "torch-export" else f"metadata {CLASSES_KEY!r}"
        outputs = built.info.output_shape[0]
        named = f"its {count(outputs, 'output')}" if len(classes) == outputs else \
            f"the first {len(classes)} of its {outputs} outputs (the rest were never a label)"
        log(f"the names of {named}, the classes it was trained on ({listed(classes)}), are in its {where} "
            "(a JSON list)")
    return out


def _with_onnx_metadata(model: bytes, key: str, value: str) -> bytes:
    """The ONNX model `model` with the metadata entry key: value (what onnxruntime's
    custom_metadata_map reads)."""
    import onnx

    proto = onnx.load_from_string(model)
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
    return proto.SerializeToString()
