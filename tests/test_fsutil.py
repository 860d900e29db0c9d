"""Writing files atomically: the result has the permissions an ordinary write would give it."""
from __future__ import annotations

import os
import stat

from alexspec.fsutil import remove_stray_temporaries, write_atomic


def test_a_new_file_gets_the_mode_open_gives_and_an_existing_one_keeps_its_own(tmp_path, monkeypatch):
    import alexspec.fsutil as fsutil

    mask = os.umask(0o022)
    monkeypatch.setattr(fsutil, "_UMASK", 0o022)  # read at import; the test's umask is set here
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic = tmp_path / "atomic.txt"
        write_atomic(atomic, "x")
        assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
        atomic.chmod(0o600)
        write_atomic(atomic, "y")
        assert stat.S_IMODE(atomic.stat().st_mode) == 0o600 and atomic.read_text() == "y"
    finally:
        os.umask(mask)


def test_only_the_temporaries_write_atomic_leaves_are_removed(tmp_path):
    strays = [tmp_path / ".best.pt.x1y2z3q4.tmp", tmp_path / ".config.json.abc_123.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / "step-000000001.pt"]
    for path in strays + kept:
        path.write_text("x")
    assert sorted(remove_stray_temporaries(tmp_path)) == sorted(strays)
    assert all(path.exists() for path in kept) and not any(path.exists() for path in strays)


def test_a_failed_write_names_the_file_asked_for_and_leaves_no_temporary(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    try:
        write_atomic(folder, "x")
    except OSError as exc:
        assert exc.filename == str(folder), exc.filename
    else:
        raise AssertionError("writing over a folder succeeded")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and folder.is_dir()


def test_a_write_makes_the_folders_it_goes_in_and_refuses_a_file_in_their_path(tmp_path):
    write_atomic(tmp_path / "reports" / "alexnet" / "r.md", "x")
    assert (tmp_path / "reports" / "alexnet" / "r.md").read_text() == "x"
    (tmp_path / "notes").write_text("mine")
    try:
        write_atomic(tmp_path / "notes" / "r.md", "x")
    except NotADirectoryError as exc:
        assert exc.filename == str(tmp_path / "notes" / "r.md")
    else:
        raise AssertionError("writing under a file succeeded")
    assert (tmp_path / "notes").read_text() == "mine"
