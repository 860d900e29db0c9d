"""Reports and the non-error CLI paths, as a user runs them."""
from __future__ import annotations

import csv
import io
import json

from alexspec import analyse
from alexspec.report import render
from alexspec.spec import load_text
from conftest import ROOT, SPECS, run_cli


def test_json_report_is_the_machine_interface():
    result = run_cli("report", "specs/alexnet.yaml", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "alexnet"
    assert data["input_shape"] == [3, 227, 227]
    assert data["total_params"] == 60_965_224
    assert round(data["total_macs"] / 1e6, 1) == 724.4
    conv1 = data["layers"][0]
    assert {"name", "type", "output_shape", "params", "macs", "tower", "device"} <= set(conv1)
    assert (conv1["name"], conv1["type"], conv1["output_shape"], conv1["params"]) == ("conv1", "conv", [96, 55, 55], 34_944)
    assert conv1["device"] == ["cuda:0", "cuda:1"] and conv1["tower"] == [0, 1]
    assert [t["params"] for t in data["per_tower"]] == [30_482_612, 30_482_612]
    roles = {layer["name"]: layer["towers_role"] for layer in data["layers"]}
    assert (roles["conv2"], roles["conv3"], roles["fc6"]) == ("local", "cross", "cross")
    assert any("253,440" in note and "290,400" in note for note in data["notes"])


def test_batch_and_dtype_scale_memory():
    info = analyse(SPECS / "alexnet.yaml")
    data = json.loads(render(info, "json", batch=128, dtype="bf16"))
    assert data["layers"][0]["output_bytes"] == 96 * 55 * 55 * 2 * 128
    assert data["memory"]["params_bytes"] == 60_965_224 * 2
    one = json.loads(render(info, "json"))
    assert data["memory"]["training_saved_bytes"] < one["memory"]["training_saved_bytes"] * 128


def test_csv_rows_add_up():
    text = render(analyse(SPECS / "caffe-alexnet.yaml"), "csv")
    *rows, total = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 14
    assert sum(int(r["params"]) for r in rows) == 62_378_344
    assert (total["name"], total["type"], int(total["params"])) == ("total", "total", 62_378_344)  # the paper's 62.4M
    assert int(total["macs"]) == sum(int(r["macs"]) for r in rows) and total["output_shape"] == "1000"
    assert rows[0]["kernel"] == "11x11" and rows[0]["stride"] == "4x4"


def test_table_and_markdown_show_totals_and_rounding_marks():
    tv = analyse(SPECS / "torchvision-alexnet.yaml")
    for fmt in ("table", "markdown"):
        text = render(tv, fmt)
        assert "61,100,840" in text
        assert "64x55x55*" in text  # rounded layer marked
        assert "conv1: height and width 55.25 -> 55 (floor)" in text
    table = render(analyse(SPECS / "alexnet.yaml"), "table")
    assert "tower 0" in table and "device cuda:1" in table and "30,482,612" in table
    assert "known erratum" in table


def test_report_of_a_bundled_spec_by_name_from_anywhere(tmp_path):
    result = run_cli("report", "lenet5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "61,706" in result.stdout


def test_report_to_a_file(tmp_path):
    out = tmp_path / "r.md"
    result = run_cli("report", "alexnet", "-f", "markdown", "-o", str(out))
    assert result.returncode == 0 and out.read_text().startswith("# alexnet")
    assert result.stdout == f"wrote {out}\n" and result.stderr == ""  # as every command says what it wrote
    result = run_cli("report", "alexnet", "-o", str(tmp_path / "reports" / "alexnet" / "r.txt"))
    assert result.returncode == 0 and (tmp_path / "reports" / "alexnet" / "r.txt").read_text().startswith("alexnet")


def test_report_takes_its_format_from_the_file_name_and_refuses_a_picture_or_a_mismatch(tmp_path):
    for name, check in (("r.json", lambda text: json.loads(text)["total_params"] == 61_706),
                        ("r.csv", lambda text: list(csv.DictReader(io.StringIO(text)))[-1]["params"] == "61706"),
                        ("r.md", lambda text: text.startswith("# lenet5")),
                        ("r.dot", lambda text: text.startswith("digraph")),
                        ("r.txt", lambda text: "61,706" in text and text.lstrip().startswith("lenet5"))):
        result = run_cli("report", "lenet5", "-o", str(tmp_path / name))
        assert result.returncode == 0 and check((tmp_path / name).read_text()), (name, result.stderr)
    for args, said in ((["-f", "dot", "-o", "x.png"], "x.png: the report is text, not a picture"),
                       (["-o", "x.svg"], "x.svg: the report is text, not a picture"),
                       (["-f", "csv", "-o", "x.json"], "x.json: a .json file, but --format is csv")):
        result = run_cli("report", "lenet5", *args, cwd=tmp_path)
        assert result.returncode == 2 and said in result.stderr, result.stderr
    assert not any(tmp_path.glob("x.*"))
    # before: the spec itself was replaced by its report
    spec = (SPECS / "lenet5.yaml").read_text()
    for name, said in (("net.yaml", "./net.yaml: a spec's name, and the report is not YAML"),
                       ("net.py", "./net.py: a report is a table (.txt), markdown, JSON, CSV or Graphviz; name it "
                                  ".txt or .md or .json or .csv or .dot (a file of another kind there would be "
                                  "replaced)"),
                       ("net.txt", "./net.txt: is the spec being reported; write the report to another file")):
        (tmp_path / name).write_text(spec)
        result = run_cli("report", name, "-o", f"./{name}", cwd=tmp_path)
        assert result.returncode == 2 and said in result.stderr and (tmp_path / name).read_text() == spec, \
            result.stderr


def test_compile_writes_deterministic_graph_json(tmp_path):
    for out in ("a", "b"):
        result = run_cli("compile", "specs/alexnet.yaml", "-o", str(tmp_path / out))
        assert result.returncode == 0, result.stderr
    first = (tmp_path / "a" / "graph.json").read_bytes()
    assert first == (tmp_path / "b" / "graph.json").read_bytes()
    graph = json.loads(first)
    assert graph["total_params"] == 60_965_224 and graph["towers"] == 2
    conv2 = graph["layers"][3]
    assert conv2["type"] == "conv" and conv2["name"] == "conv2" and conv2["kernel"] == [5, 5]
    assert conv2["inferred"]["output_shape"] == [256, 27, 27] and conv2["inferred"]["groups"] == 2
    assert conv2["init"] == {"std": 0.01, "bias": 1}
    assert graph["training"]["schedule"]["type"] == "plateau"
    assert json.loads((tmp_path / "a" / "report.json").read_text())["total_params"] == 60_965_224
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert {"alexnet.py", "graph.json", "report.json", "alexnet.dot"} <= set(names)
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]  # no temp files left behind


def test_validate_several_specs():
    result = run_cli("validate", *sorted(str(p) for p in SPECS.glob("*.yaml")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok: ") == len(list(SPECS.glob("*.yaml")))


def test_help_teaches_with_examples():
    result = run_cli("--help")
    assert result.returncode == 0 and "alexspec report alexnet" in result.stdout
    for command in ("validate", "report", "schema", "compile"):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "examples:" in result.stdout, command


def test_compiler_imports_no_torch():
    code = ("import sys, alexspec, alexspec.cli, alexspec.report, alexspec.graph\n"
            "from alexspec.report import render\n"
            "render(alexspec.analyse('specs/alexnet.yaml'), 'table')\n"
            "print(sorted(m for m in ('torch', 'triton', 'numpy') if m in sys.modules))")
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_console_that_cannot_show_box_drawing_gets_an_ascii_table():
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    result = subprocess.run([sys.executable, "-m", "alexspec", "report", "digits"], capture_output=True, cwd=ROOT,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode("cp1252")
    utf8 = run_cli("report", "digits").stdout
    assert text.splitlines()[1].startswith("+---+") and "| conv1 " in text
    assert text == utf8.translate(str.maketrans({"─": "-", "│": "|", **{c: "+" for c in "┌┐└┘├┤┬┴┼"}}))


def test_the_memory_line_names_the_spec_s_optimizer_and_counts_its_state():
    info = analyse(SPECS / "digits.yaml")
    sgd = render(info, "json")
    data = json.loads(sgd)["memory"]
    assert data["optimizer"] == "SGD with momentum" and "training total (SGD with momentum)" in render(info)
    params = data["params_bytes"]
    assert data["training_total_bytes"] == 3 * params + data["training_saved_bytes"]  # weights, grads, momentum
    adamw = analyse(load_text((SPECS / "digits.yaml").read_text().replace("optimizer: sgd", "optimizer: adamw"),
                              "d.yaml"))
    memory = json.loads(render(adamw, "json"))["memory"]
    assert memory["optimizer"] == "AdamW" and "training total (AdamW)" in render(adamw)
    assert memory["training_total_bytes"] == 4 * params + data["training_saved_bytes"]  # two moments


def test_a_one_tower_one_device_table_has_no_tower_or_device_columns():
    one = render(analyse(SPECS / "digits.yaml"), "table").splitlines()[2]
    assert "tower" not in one and "device" not in one and "params" in one
    two = render(analyse(SPECS / "alexnet.yaml"), "table").splitlines()[2]
    assert "│ tower │ device " in two


def test_a_report_that_cannot_be_written_names_the_path_and_why(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("report", "digits", "-o", str(tmp_path / "notes.txt" / "r" / "r.txt"))
    assert result.returncode == 2 and result.stderr == f"alexspec report: {tmp_path / 'notes.txt' / 'r' / 'r.txt'}: " \
        f"{tmp_path / 'notes.txt'} is a file, not a folder; give a path in a folder\n"
    result = run_cli("report", "digits", "-o", str(tmp_path))
    assert result.returncode == 2 and result.stderr == f"alexspec report: {tmp_path} is a folder; give a file " \
        f"(a path in it, {tmp_path / 'NAME'})\n"
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_table_fits_the_terminal_leaving_out_its_least_needed_columns():
    info = analyse(SPECS / "alexnet.yaml")
    full = render(info, "table").splitlines()
    assert max(len(line) for line in full[:25]) > 100
    narrow = render(info, "table", width=100).splitlines()
    table = [line for line in narrow if line[:1] in "┌│├└"]
    assert max(len(line) for line in table) <= 100
    header = table[1]
    assert all(f" {name} " in header for name in ("layer", "type", "output", "params"))
    assert "% params" not in header and "| 60,965,224 |".replace("|", "│") in "\n".join(narrow)


def test_the_summary_splits_trainable_parameters():
    data = json.loads(render(analyse(SPECS / "alexnet.yaml"), "json"))
    assert (data["trainable_params"], data["non_trainable_params"]) == (60_965_224, 0)
    assert "params 60,965,224 (trainable 60,965,224, non-trainable 0;" in render(analyse(SPECS / "alexnet.yaml"))


def test_the_table_shows_output_shapes_with_the_batch_first():
    table = render(analyse(SPECS / "alexnet.yaml"), "table", batch=128)
    assert "│ conv1 " in table and " 128x96x55x55 " in table and " 128x1000 " in table
    data = json.loads(render(analyse(SPECS / "alexnet.yaml"), "json", batch=128))
    assert data["layers"][0]["output_shape"] == [96, 55, 55] and data["batch"] == 128  # JSON: per image, and the batch
