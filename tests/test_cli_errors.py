"""Every class of bad spec, through the real command line: one located line per problem, exit 2."""
from __future__ import annotations

import json

import pytest

from conftest import HEADER, locate, run_cli, spec_text

TOWERS2 = HEADER.replace("layers:\n", "towers: 2\nlayers:\n")
PAPER_224 = spec_text("{name: conv1, type: conv, out: 96, kernel: 11, stride: 4}",
                      header=HEADER.replace("height: 32, width: 32", "height: 224, width: 224"))

CASES = {
    # name: (spec text, text the location must point at (needle, occurrence), fragments of the message)
    "fraction under exact rounding": (
        PAPER_224, ("{name: conv1", 1),
        ["layers[0].conv1", "(224 - 11) / 4 + 1 = 54.25 is not an integer", "input height and width 227",
         "padding 2 with `rounding: floor` (-> 55)"]),
    "channels not divisible by groups": (
        spec_text("{name: c1, type: conv, out: 10, kernel: 3, groups: 2}"), ("2}", 2),
        ["3 input channels do not divide into 2 groups"]),
    "out not divisible by towers": (
        spec_text("{name: c1, type: conv, out: 9, kernel: 3}", header=TOWERS2), ("9,", 1),
        ["out 9 does not divide into 2 towers", "e.g. 10"]),
    "output smaller than one": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 4, stride: 4}",
                  "{name: c2, type: conv, out: 8, kernel: 11}"), ("11}", 1),
        ["kernel 11 is larger than the input height and width 8"]),
    "unknown layer type": (
        spec_text("{name: p1, type: maxpol, kernel: 2}"), ("maxpol", 1),
        ["layers[0].p1.type", "'maxpol' is not one of", "did you mean 'maxpool'?"]),
    "unknown key": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 3, strid: 2}"), ("strid", 1),
        ["layers[0].c1.strid", "unknown key 'strid' for a conv layer", "did you mean 'stride'?"]),
    "duplicate layer names": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 3}", "{name: c1, type: relu}"), ("c1", 2),
        ["duplicate layer name 'c1' (first used on line 5)"]),
    "undeclared crossing": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 3}", "{name: f, type: flatten}",
                  "{name: fc, type: linear, out: 10}", header=TOWERS2), ("{name: fc", 1),
        ["does not declare the crossing", "towers: cross"]),
    "placement does not match towers": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 3}",
                  header=TOWERS2.replace("towers: 2\n", "towers: 2\nplacement: [cuda:0, cuda:1, cuda:2]\n")),
        ("[cuda:0", 1), ["placement lists 3 devices for 2 towers"]),
    "expect disagrees": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 3, expect: {shape: [8, 32, 32]}}"), ("[8, 32, 32]", 1),
        ["expect.shape says [8, 32, 32] but inference gives [8, 30, 30]"]),
    "unsupported version": (
        HEADER.replace("alexspec: 1", "alexspec: 7") + "  - {name: r, type: relu}\n", ("7", 1),
        ["unsupported spec version 7", "alexspec: 1"]),
    "missing version": (
        HEADER.replace("alexspec: 1\n", "") + "  - {name: r, type: relu}\n", ("name: tiny", 1),
        ["missing key 'alexspec'"]),
    "empty file": ("", ("", 1), ["the file is empty"]),
    "not a mapping": ("- conv\n- relu\n", ("- conv", 1), ["a spec is a mapping"]),
    "tabs": (HEADER + "\t- {name: r, type: relu}\n", ("\t", 1), ["tab"]),
    "alias bomb": ("a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n", ("*a", 1),
                   ["aliases"]),
    "huge number": (spec_text("{name: c1, type: conv, out: 1e12, kernel: 3}"), ("1e12", 1),
                    ["expected an integer, got the decimal number 1e+12"]),
    "negative number": (spec_text("{name: c1, type: conv, out: 8, kernel: 3, padding: -3}"), ("-3", 1),
                        ["padding: must be at least 0, got -3"]),
    "string where an int belongs": (spec_text("{name: c1, type: conv, out: '8', kernel: 3}"), ("'8'", 1),
                                    ["expected an integer, got the text '8'", "write 8 without quotes"]),
    "hostile layer name": (spec_text("{name: 'x; import os', type: relu}"), ("'x; import os'", 1),
                           ["is not a valid name"]),
    "keyword layer name": (spec_text("{name: lambda, type: relu}"), ("lambda", 1), ["Python keyword"]),
    "learning-rate multiplier of a layer without weights": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 3}", "{name: p1, type: maxpool, kernel: 2}")
        + "training: {lr_mult: {p1: {weight: 2}}}\n", ("p1:", 1),
        ["training.lr_mult.p1: 'p1' is a maxpool layer, which learns no weights",
         "name a conv, linear or batchnorm layer"]),
    "resized smaller than the input": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 3}") + "training: {augmentation: {resize: 16}}\n",
        ("16", 1), ["training.augmentation.resize: resize 16 is smaller than the input 32x32",
                    "resize to at least 32"]),
    "crop of another shape than a wide input": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 3}", header=HEADER.replace("width: 32", "width: 48"))
        + "training: {augmentation: {resize: 64, crop: 32}}\n", ("32}", 1),
        ["training.augmentation.crop: crop 32x32 does not match the input 32x48",
         "use crop: [32, 48] or change `input`"]),
    "crop larger than the resized images": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 3}", header=HEADER.replace("width: 32", "width: 48"))
        + "training: {augmentation: {resize: 40, crop: [32, 48]}}\n", ("[32, 48]", 1),
        ["training.augmentation.crop: crop 32x48 is larger than the resized image (40x40)"]),
    "colour lighting on grey images": (
        spec_text("{name: c1, type: conv, out: 8, kernel: 3}", header=HEADER.replace("channels: 3", "channels: 1"))
        + "training: {augmentation: {lighting: 0.1}}\n", ("0.1", 1),
        ["training.augmentation.lighting: lighting is colour noise along ImageNet's RGB principal components; it "
         "needs 3 input channels and this network takes 1", "remove it (or give lighting: 0)"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_spec_gives_located_message_and_exit_2(case, write_spec):
    text, (needle, occurrence), fragments = CASES[case]
    path = write_spec(text)
    result = run_cli("validate", str(path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line, col = locate(text, needle, occurrence) if needle else (1, 1)
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{path}:{line}:{col}: "), first
    for fragment in fragments:
        assert fragment in first, first
    assert result.stderr.splitlines()[-1].startswith("1 problem in ")


def test_all_problems_are_reported_at_once(write_spec):
    text = spec_text("{name: conv1, type: conv, out: 96, kernel: 11, stride: 4}",
                     "{name: c2, type: conv, out: 250, kernel: 5, padding: 2, groups: 4}",
                     "{name: p, type: maxpol, kernel: 3}",
                     "{name: c3, type: conv, out: 8, kernal: 3}",
                     header=HEADER.replace("height: 32, width: 32", "height: 224, width: 224"))
    result = run_cli("validate", str(write_spec(text)))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("5 problems in ")
    messages = "\n".join(lines)
    for fragment in ["54.25", "out 250 does not divide into 4 groups", "did you mean 'maxpool'",
                     "missing key 'kernel'", "unknown key 'kernal'"]:
        assert fragment in messages
    # in file order
    assert [int(line.split(":")[1]) for line in lines[:-1]] == sorted(int(line.split(":")[1]) for line in lines[:-1])


def test_missing_file_exit_2():
    result = run_cli("validate", "no/such/spec.yaml")
    assert result.returncode == 2
    assert result.stderr.startswith("no/such/spec.yaml:1:1: no such file")


def test_report_and_compile_also_exit_2_on_bad_input(write_spec, tmp_path):
    path = write_spec(PAPER_224)
    for args in (["report", str(path)], ["compile", str(path), "-o", str(tmp_path / "out")]):
        result = run_cli(*args)
        assert result.returncode == 2 and "54.25" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "graph.json").exists()


def test_bad_arguments_exit_2():
    result = run_cli("report", "alexnet", "--batch", "-4")
    assert result.returncode == 2 and "--batch" in result.stderr
    result = run_cli("report", "alexnet", "--format", "xml")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_only_bad_input_exits_2_and_an_internal_error_shows_its_traceback(monkeypatch, capsys):
    from alexspec import cli
    from alexspec.cli import spec_commands
    from alexspec.errors import BadInput

    def failing(error):
        def command(_args):
            raise error
        return command

    monkeypatch.setattr(spec_commands, "cmd_validate", failing(ValueError("an internal slip")))
    assert cli.main(["validate", "x.yaml"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: an internal slip" in err and "please report it" in err
    monkeypatch.setattr(spec_commands, "cmd_validate", failing(BadInput("the argument is wrong; give another")))
    assert cli.main(["validate", "x.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == "alexspec validate: the argument is wrong; give another\n"


def test_under_torchrun_only_rank_0_lists_a_specs_problems_and_the_others_name_their_rank(write_spec, monkeypatch,
                                                                                          capsys):
    """Every process of a torchrun launch reads the same spec and arguments: their problems are
    printed once, by rank 0; any other error says which process it came from."""
    from alexspec import cli, settings
    from alexspec.cli import spec_commands
    from alexspec.errors import BadInput

    bad = str(write_spec(PAPER_224))
    with settings.override(rank=1, world_size=2):
        assert cli.main(["train", bad]) == 2
        with pytest.raises(SystemExit) as usage:
            cli.main(["report", "alexnet", "--batch", "-4"])
        assert usage.value.code == 2
        monkeypatch.setattr(spec_commands, "cmd_validate", lambda _args: (_ for _ in ()).throw(BadInput("no cuda:1")))
        assert cli.main(["validate", bad]) == 2
    assert capsys.readouterr().err == "rank 1: alexspec validate: no cuda:1\n"
    monkeypatch.undo()
    with settings.override(rank=0, world_size=2):
        assert cli.main(["train", bad]) == 2
    assert "54.25" in capsys.readouterr().err


def test_a_bad_set_value_is_blamed_on_the_set_argument_not_on_the_spec_file():
    result = run_cli("validate", "digits")  # the bundled spec itself is fine
    assert result.returncode == 0
    result = run_cli("train", "digits", "--set", "training.lrr=0.1", "--set", "training.lr=-1", "--max-steps", "1")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("--set training.lr=-1:1:1: training.lr: must be greater than 0")
    assert lines[1].startswith("--set training.lrr=0.1:1:1: training.lrr: unknown key 'lrr'")
    assert "digits.yaml" not in result.stderr


SMALL_NET = """\
alexspec: 1
name: small
input: {channels: 3, height: 32, width: 32}
layers:
  - {name: conv, type: conv, out: 8, kernel: 3}
  - {name: pool, type: maxpool, kernel: 2}
  - {name: flatten, type: flatten}
  - {name: fc, type: linear, out: 10}
"""


def test_set_names_a_layer_by_its_name_or_index_in_report_validate_and_compile(write_spec, tmp_path):
    spec = str(write_spec(SMALL_NET))
    for layer in ("conv", "0"):  # a 5x5 conv of 3 channels to 16: 32 -> 28, pooled to 14
        result = run_cli("report", spec, "--format", "json", "--set", f"layers.{layer}.out=16",
                         "--set", "layers.conv.kernel=5")
        assert result.returncode == 0, result.stderr
        conv, pool, _, fc = json.loads(result.stdout)["layers"]
        assert conv["output_shape"] == [16, 28, 28] and conv["params"] == 16 * 3 * 5 * 5 + 16
        assert pool["output_shape"] == [16, 14, 14] and fc["params"] == 16 * 14 * 14 * 10 + 10
    result = run_cli("validate", spec, "--set", "layers.fc.out=12")
    assert result.returncode == 0 and "output 12" in result.stdout
    result = run_cli("compile", spec, "--set", "layers.conv.out=5", "-o", str(tmp_path / "build"))
    assert result.returncode == 0, result.stderr
    assert "self.conv = layers.Conv2d(3, 5, kernel=(3, 3)" in (tmp_path / "build" / "small.py").read_text()


EXPECTING = """\
alexspec: 1
name: expecting
input: {channels: 3, height: 16, width: 16}
layers:
  - {name: conv, type: conv, out: 4, kernel: 3, padding: 1, activation: relu, expect: {params: 112}}
  - {name: pool, type: maxpool, kernel: 2, expect: {shape: [4, 8, 8]}}
  - {name: flatten, type: flatten}
  - {name: fc, type: linear, out: 10, expect: {params: 2570}}
"""


def test_a_new_input_by_set_sets_aside_the_expectations_it_makes_untrue_and_says_which(write_spec, tmp_path):
    spec = str(write_spec(EXPECTING))
    result = run_cli("report", spec, "--set", "input.height=8", "--set", "input.width=8")
    assert result.returncode == 0, result.stderr
    assert ("note: pool, fc: `expect` not checked (written for the input the spec file gives, which --set "
            "input.height=8, --set input.width=8 changed)") in result.stdout  # conv's still hold: checked
    result = run_cli("train", spec, "--data", "synthetic", "--epochs", "1", "--set", "input.channels=1",
                     "-o", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "note: conv: `expect` not checked (written for the input the spec file gives, which --set " \
        "input.channels=1 changed)" in result.stdout  # its params: 4 x 1 x 3 x 3 + 4, not 112
    for command in ("report", "eval", "export"):  # the run's spec, as it ran: its expectations set aside alike
        result = run_cli(command, str(tmp_path / "run"), *(["-o", str(tmp_path / "net.pt2")] if command == "export"
                                                            else []))
        assert result.returncode == 0, result.stderr
    assert "note: conv: `expect` not checked" in run_cli("report", str(tmp_path / "run")).stdout
    result = run_cli("report", spec, "--set", "layers.conv.out=8")  # not the input: every expectation holds
    assert result.returncode == 2 and "expect.params says 112 but inference gives 224" in result.stderr


@pytest.mark.parametrize("args, said", [
    (("train", "--workers", "-1"), "argument --workers: must be from 0 to 16777216, got -1"),
    (("bench", "digits", "--warmup", "-5"), "argument --warmup: must be from 0 to 16777216, got -5"),
    (("train", "--epochs", "two"), "argument --epochs: expected a whole number, got 'two'"),
])
def test_counts_below_their_least_are_refused(args, said):
    result = run_cli(*args)
    assert result.returncode == 2 and said in result.stderr


def test_compile_into_a_file_says_it_is_a_file_and_leaves_it(write_spec):
    spec = write_spec(SMALL_NET)
    result = run_cli("compile", str(spec), "-o", str(spec))
    assert result.returncode == 2
    assert "cannot create the output folder (it is a file, not a folder); choose another folder with -o" in result.stderr
    assert spec.read_text() == SMALL_NET


def test_compile_output_named_like_a_module_file_is_refused(tmp_path):
    out = tmp_path / "net.py"  # compile writes a folder: this would have become the folder net.py/
    result = run_cli("compile", "lenet5", "-o", str(out))
    assert result.returncode == 2 and not out.exists()
    assert f"{out}:1:1: -o names the output folder, where lenet5.py, graph.json, report.json and lenet5.dot are " \
           "written; give a folder, e.g. -o build (writes build/lenet5.py)" in result.stderr
    out.mkdir()  # a folder that is named so already is one
    assert run_cli("compile", "lenet5", "-o", str(out)).returncode == 0 and (out / "lenet5.py").is_file()


@pytest.mark.parametrize("assignment, said", [
    ("layers.conv8.out=5", "layers.conv8.out: 'conv8' names no item of layers; name one of conv, pool, flatten, fc, "
                           "or give an index (0 to 3)"),
    ("layers.4.out=5", "'4' names no item of layers"),
    ("layers.conv.outt=5", "layers[0].conv.outt: unknown key 'outt' for a conv layer; did you mean 'out'?"),
    ("output.classes=5", "output: unknown key 'output' for this mapping"),  # a key --set added, not the file's
    ("name.first=x", "name is a value, not a mapping or a list, so it has no 'first'"),
])
def test_a_bad_set_path_is_blamed_on_the_set_argument(write_spec, assignment, said):
    spec = write_spec(SMALL_NET)
    result = run_cli("validate", str(spec), "--set", assignment)
    assert result.returncode == 2
    assert result.stderr.startswith(f"--set {assignment}:1:1: ") and said in result.stderr, result.stderr
    assert str(spec) not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("extra, said", [
    ("weight_decay: 0.1", "unknown key 'weight_decay' for a conv layer; conv keys are: activation, bias, dilation"),
    ("dropout: 0.5", "unknown key 'dropout' for a conv layer; conv keys are: "),
    ("padding_mode: zeros", "unknown key 'padding_mode' for a conv layer; conv keys are: "),
    ('expect: {shape: "10"}', "expected a list, got the text '10'; write a list, e.g. [10]"),
    ("kernal: 3", "unknown key 'kernal' for a conv layer; did you mean 'kernel'?"),
])
def test_hints_name_the_fix_and_guess_only_at_typos(write_spec, extra, said):
    path = write_spec(spec_text(f"{{name: c, type: conv, out: 4, kernel: 3, {extra}}}"))
    result = run_cli("validate", str(path))
    assert result.returncode == 2 and said in result.stderr, result.stderr
    assert ("did you mean" in result.stderr) == ("kernal" in extra)


@pytest.mark.parametrize("layer, said", [
    ("{name: c, type: Conv2d, out: 4, kernel: 3}", "did you mean 'conv'?"),
    ("{name: c, type: Dense, out: 4}", "did you mean 'linear'?"),
    ("{name: c, type: InnerProduct, out: 4}", "did you mean 'linear'?"),
    ("{name: c, type: mul, inputs: [input, input]}", "did you mean 'multiply'?"),
    ("{name: c, type: Eltwise, inputs: [input, input]}", "did you mean 'add' or 'multiply'?"),
    ("{name: c, type: cat, inputs: [input, input]}", "did you mean 'concat'?"),
    ("{name: c, type: Dropout2d, p: 0.1}", "did you mean 'dropout' (with `channels: true`)?"),
    ("{name: c, type: conv, out: 4, kernel: 3, activation: swish}", "did you mean 'silu'?"),
])
def test_another_framework_s_name_for_a_layer_is_answered_with_this_language_s(write_spec, layer, said):
    result = run_cli("validate", str(write_spec(spec_text(layer))))
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_one_spelling_for_devices_and_outputs_with_the_old_ones_kept():
    from alexspec.cli import build_parser

    parser = build_parser()
    for command, extra in (("train", []), ("eval", ["--checkpoint", "c.pt"]), ("compile", []),
                           ("export", ["-o", "x.pt2"])):
        new = parser.parse_args([command, "digits", "--devices", "cpu", *extra])
        old = parser.parse_args([command, "digits", "--device", "cpu", *extra])
        assert new.devices == old.devices == ["cpu"], command
    for command in ("train", "bench"):
        spellings = [parser.parse_args([command, "digits", flag, "somewhere"]).output for flag in ("-o", "--output",
                                                                                                    "--out")]
        assert spellings == ["somewhere"] * 3, command


def test_export_takes_its_format_from_the_file_name_or_asks_for_it(tmp_path):
    result = run_cli("export", "lenet5", "-o", str(tmp_path / "net.bin"))
    assert result.returncode == 2 and "say the format with --format torch-export or onnx" in result.stderr
    assert not (tmp_path / "net.bin").exists()
    (tmp_path / "net.py").write_text("the model's source\n")  # before: --format onnx replaced it with the model
    for name, fmt, said in (("net.py", "onnx", "net.py: an ONNX model is named .onnx, not .py"),
                            ("net.onnx", "torch-export", "net.onnx: a torch.export program is named .pt2, not .onnx")):
        result = run_cli("export", "lenet5", "--format", fmt, "-o", name, cwd=tmp_path)
        assert result.returncode == 2 and said in result.stderr, result.stderr
    assert (tmp_path / "net.py").read_text() == "the model's source\n" and not (tmp_path / "net.onnx").exists()


@pytest.mark.parametrize("args, said", [
    (("train", "--batch-size", "64"), "alexspec train: error: unknown option --batch-size; did you mean --batch?"),
    (("train", "--lr", "0.1"), "alexspec train: error: --lr is not an option; the spec's training.lr is changed by "
                               "--set training.lr=0.1"),
    (("validate", "digits", "--learning-rate=0.3"), "the spec's training.lr is changed by --set training.lr=0.3"),
    (("report", "digits", "--formt", "json"), "alexspec report: error: unknown option --formt; did you mean --format?"),
    (("schema", "--lr", "1"), "alexspec schema: error: unknown option --lr (see `alexspec schema --help`)"),
    (("report", "digits", "a", "b"), "alexspec report: error: unexpected arguments 'a' 'b' (see `alexspec report "
                                     "--help`)"),
])
def test_an_option_a_command_lacks_is_answered_with_the_one_meant(args, said, capsys):
    from alexspec.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(list(args))
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and said in err, err
    assert err.startswith(f"usage: alexspec {args[0]} ")  # the command's own usage, not the top level's


@pytest.mark.parametrize("command", [["train"], ["eval", "digits"], ["compile", "digits"], ["export", "digits", "-o",
                                                                                              "x.pt2"]])
def test_a_device_no_spec_could_name_is_refused_by_its_argument(command, capsys):
    from alexspec.cli import main

    with pytest.raises(SystemExit) as stopped:  # 'tpu' went on to torch's .to(), an internal error
        main([*command, "--devices", "cpu,tpu"])
    assert stopped.value.code == 2
    assert "argument --devices/--device: 'tpu' is not a device; name cpu, cuda, cuda:N (N from 0), mps or auto" \
        in capsys.readouterr().err


def test_mps_where_pytorch_has_none_or_no_device_is_bad_input_not_an_internal_error(monkeypatch):
    from alexspec.errors import BadInput
    from alexspec.kernels.nn.backend import resolve_devices

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(BadInput, match="the device mps needs Apple's Metal"):
        resolve_devices(["mps"])
    with pytest.raises(BadInput, match="'tpu' is not a device"):  # from Python, where no argument checked it
        resolve_devices(["tpu"])


def test_a_path_that_cannot_be_used_says_what_to_do():
    import errno

    from alexspec.cli import unusable_path

    assert unusable_path(OSError(errno.ENOSPC, "No space left on device", "runs/a/best.pt")) == \
        "cannot write runs/a/best.pt: the disk is full; free some space or write to another disk"
    assert unusable_path(OSError(errno.EACCES, "Permission denied", "/etc/r.md")) == \
        "/etc/r.md: Permission denied (check its and its folder's permissions, or give another path)"
    assert unusable_path(OSError(errno.EIO, "Input/output error", "r.md")) == "r.md: Input/output error"
