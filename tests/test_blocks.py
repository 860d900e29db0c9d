"""Blocks: written once under `blocks:`, used by `type: block` layers, expanded before anything
else reads the spec; ResNet-50 in a page, errors located in the block or at the value given."""
from __future__ import annotations

import pytest

from conftest import SPECS, run_cli

from alexspec.errors import SpecError
from alexspec.spec import analyse
from alexspec.spec.loader import load_text

SPEC = """alexspec: 1
name: stacked
input: {channels: 4, height: 8, width: 8}
blocks:
  residual:
    params: {out: 4, kernel: 3}
    layers:
      - {name: conv, type: conv, out: $out, kernel: $kernel, padding: 1}
      - {name: add, type: add, inputs: [conv, $input]}
layers:
  - {name: stem, type: conv, out: 4, kernel: 1}
  - {name: stage, type: block, block: residual, repeat: 3}
  - {name: last, type: block, block: residual, with: {out: 4}}
  - {name: gap, type: global_avgpool}
"""


def test_each_use_is_written_out_with_the_instance_s_names_and_inputs():
    info = analyse(load_text(SPEC, "stacked.yaml"))
    names = [li.layer.name for li in info.layers]
    assert names == ["stem", "stage_1_conv", "stage_1_add", "stage_2_conv", "stage_2_add", "stage_3_conv",
                     "stage_3_add", "last_conv", "last_add", "gap"]
    inputs = {li.layer.name: li.layer.inputs for li in info.layers if li.layer.inputs}
    assert inputs == {"stage_1_add": ("stage_1_conv", "stem"), "stage_2_add": ("stage_2_conv", "stage_1_add"),
                      "stage_3_add": ("stage_3_conv", "stage_2_add"), "last_add": ("last_conv", "stage_3_add")}
    assert info.total_params == 4 * 4 + 4 + 4 * (4 * 4 * 9 + 4)


def test_resnet50_is_a_page_with_torchvisions_parameters():
    text = (SPECS / "resnet50.yaml").read_text()
    assert len(text.splitlines()) < 60
    info = analyse(SPECS / "resnet50.yaml")
    assert info.total_params == 25_557_032  # torchvision's resnet50
    assert len(info.layers) == 174 and info.layers[-2].output_shape == (2048,)


@pytest.mark.parametrize("change, where, says", [
    (("block: residual, repeat: 3", "block: residul, repeat: 3"), "12:39",
     "no block named 'residul' in `blocks:`; did you mean 'residual'?"),
    (("block: residual, repeat: 3", "block: bottleneck, repeat: 3"), "12:39",
     "no block named 'bottleneck' in `blocks:`; blocks: residual"),
    (("with: {out: 4}", "with: {outs: 4}"), "13:55", "block 'residual' has no parameter 'outs'; did you mean 'out'?"),
    (("kernel: $kernel", "kernel: $kernal"), "8:53", "block 'residual' has no parameter 'kernal'; did you mean 'kernel'?"),
    (("repeat: 3", "repeat: 0"), "12:57", "repeat must be a whole number from 1 to 1000, got 0"),
    (("with: {out: 4}", "with: {out: 0}"), "13:60", "layers[7].last_conv.out"),  # the value given, at the use
    (("padding: 1}", "padding: 0}"), "9:40", "layers[2].stage_1_add: add needs inputs of one shape"),  # in the block
])
def test_a_mistake_in_a_block_or_its_use_is_one_located_problem(write_spec, change, where, says):
    path = write_spec(SPEC.replace(*change))
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if says in line]
    assert len(lines) == 1 and lines[0].startswith(f"{path}:{where}:"), result.stderr


def test_a_block_cannot_hold_a_block_or_take_inputs():
    nested = SPEC.replace("      - {name: add, type: add, inputs: [conv, $input]}",
                          "      - {name: inner, type: block, block: residual}")
    with pytest.raises(SpecError, match="a block's layers cannot be blocks"):
        analyse(load_text(nested, "n.yaml"))
    with pytest.raises(SpecError, match="a block layer reads the layer before it"):
        analyse(load_text(SPEC.replace("repeat: 3}", "repeat: 3, inputs: stem}"), "i.yaml"))


@pytest.mark.slow
def test_a_spec_with_blocks_compiles_and_trains(tmp_path, write_spec):
    path = write_spec(SPEC.replace("input: {channels: 4, height: 8, width: 8}",
                                   "input: {channels: 1, height: 8, width: 8}\nclasses: 10").replace(
        "  - {name: gap, type: global_avgpool}", "  - {name: gap, type: global_avgpool}\n"
                                                  "  - {name: fc, type: linear, out: 10}"))
    result = run_cli("train", str(path), "--epochs", "1", "--max-steps", "2", "-o", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    kept = tmp_path / "run" / "spec.yaml"  # the spec as written, blocks and all, and the same network
    assert "block: residual" in kept.read_text() and analyse(kept).total_params == analyse(path).total_params


def test_the_report_sums_each_block_use_as_torchvision_counts_resnet18s_stages():
    import json

    torchvision = pytest.importorskip("torchvision")
    result = run_cli("report", "resnet18", "--format", "json")
    assert result.returncode == 0, result.stderr
    blocks = json.loads(result.stdout)["per_block"]
    stages: dict[str, int] = {}
    for block in blocks:  # layer2 is written as two uses, its first block (down) and the rest
        stages[block["name"].split("_")[0]] = stages.get(block["name"].split("_")[0], 0) + block["params"]
    model = torchvision.models.resnet18()
    assert stages == {f"layer{k}": sum(p.numel() for p in getattr(model, f"layer{k}").parameters())
                      for k in range(1, 5)}
    first = blocks[0]
    assert (first["block"], first["repeat"], first["output_shape"]) == ("basic", 2, [64, 56, 56])
    assert first["macs"] == 4 * 64 * 64 * 9 * 56 * 56  # four 3x3 convs at 56x56


def test_the_table_has_a_row_per_block_use(write_spec):
    result = run_cli("report", str(write_spec(SPEC)))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "│ block " in line]
    assert len(rows) == 2 and "residual x3" in rows[0] and "1x4x8x8" in rows[0]
    assert f"{3 * (4 * 4 * 9 + 4)}" in rows[0] and f"{4 * 4 * 9 + 4}" in rows[1]
