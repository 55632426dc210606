"""`--out` never deletes what Floodgate did not write, and says so before the run starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from helpers import queue_scenario

from sim.cli import main
from sim.report.write import MARKER


def _scenario(tmp_path, figures=False):
    d = queue_scenario(5.0, 1.0, 8, 200.0, seed=3)
    d["outputs"].update({"figures": figures, "report": figures})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _tree(d):
    return sorted((str(p.relative_to(d)), p.read_bytes() if p.is_file() else None)
                  for p in d.rglob("*"))


def _err(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_user_folder_is_refused_before_the_run_and_left_untouched(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("call the GPU vendor\n")
    scen = _scenario(folder)  # the scenario file itself lives in the folder
    before = _tree(folder)
    assert main(["run", str(scen), "--out", str(folder), "--quiet"]) == 2
    line = _err(capsys)
    assert line.startswith(f"error: --out: {folder}: ") and "did not write" in line
    assert _tree(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # no temporary left


@pytest.mark.parametrize("kind", ["file", "symlink", "fifo"])
def test_file_symlink_fifo_refused(tmp_path, capsys, kind):
    scen = _scenario(tmp_path)
    dest = tmp_path / "dest"
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("x")
    if kind == "file":
        dest.write_text("mine")
    elif kind == "symlink":
        dest.symlink_to(real)
    else:
        os.mkfifo(dest)
    t0 = time.monotonic()
    assert main(["run", str(scen), "--out", str(dest), "--quiet"]) == 2
    assert time.monotonic() - t0 < 10
    assert _err(capsys).startswith(f"error: --out: {dest}: ")
    if kind == "file":
        assert dest.read_text() == "mine"
    elif kind == "symlink":
        assert dest.is_symlink() and (real / "keep.txt").read_text() == "x"
        assert sorted(p.name for p in real.iterdir()) == ["keep.txt"]
    else:
        assert dest.exists() and not dest.is_dir()


@pytest.mark.parametrize("dest, why", [
    ("", "empty path"),
    ("{tmp}/afile/out", "is a file, not a folder"),
    ("/proc/floodgate-out", "cannot write"),
    ("{tmp}/" + "n" * 300, "longer than"),
    ("{tmp}/x/..", "not '.' or '..'"),
])
def test_bad_destinations_fail_before_simulating(tmp_path, capsys, dest, why):
    scen = _scenario(tmp_path)
    (tmp_path / "afile").write_text("")
    dest = dest.format(tmp=tmp_path)
    assert main(["run", str(scen), "--out", dest, "--quiet"]) == 2
    line = _err(capsys)
    assert line.startswith("error: --out: ") and why in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "s.yaml"]


def test_scenario_named_dot_dot_is_refused(tmp_path, capsys, monkeypatch):
    d = queue_scenario(5.0, 1.0, 8, 50.0)
    d["name"] = ".."
    d["outputs"].update({"figures": False, "report": False})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    monkeypatch.chdir(tmp_path)
    rc = main(["run", "s.yaml", "--quiet"])
    assert rc == 2 and "error:" in _err(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_rerun_replaces_only_what_floodgate_wrote(tmp_path):
    scen = _scenario(tmp_path, figures=True)
    out = tmp_path / "out"
    assert main(["run", str(scen), "--out", str(out), "--quiet"]) == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["written_by"] == "floodgate" and marker["kind"] == "run"
    assert set(marker["entries"]) == {"summary.json", "timeseries.csv", "figures", "report.html"}
    (out / "my-notes.md").write_text("peak at 21:00\n")  # added by the user afterwards
    nested = out / "plan"  # another Floodgate output inside it
    nested.mkdir()
    (nested / MARKER).write_text(json.dumps({"written_by": "floodgate", "entries": ["plan.json"]}))
    (nested / "plan.json").write_text("{}")
    before = (out / "summary.json").read_bytes()
    assert main(["run", str(scen), "--out", str(out), "--quiet"]) == 0
    assert (out / "summary.json").read_bytes() == before
    assert (out / "my-notes.md").read_text() == "peak at 21:00\n"
    assert (nested / "plan.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.yaml"]


def test_a_file_of_the_users_with_a_name_floodgate_writes_is_not_overwritten(tmp_path, capsys):
    scen = _scenario(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(scen), "--out", str(out), "--quiet"]) == 0
    (out / "report.html").write_text("my own report")  # not listed: this run wrote no report
    scen2 = tmp_path / "s2.yaml"
    d = yaml.safe_load(scen.read_text())
    d["outputs"]["report"] = True
    scen2.write_text(yaml.safe_dump(d))
    capsys.readouterr()
    assert main(["run", str(scen2), "--out", str(out), "--quiet"]) == 2
    assert "report.html" in _err(capsys)
    assert (out / "report.html").read_text() == "my own report"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_parent_holding_only_outputs_can_be_written(tmp_path):
    """`make plan` writes out/<scenario>/plan first; `make demo` must then write out/<scenario>."""
    scen = _scenario(tmp_path)
    parent = tmp_path / "out"
    assert main(["run", str(scen), "--out", str(parent / "plan"), "--quiet"]) == 0
    assert main(["run", str(scen), "--out", str(parent), "--quiet"]) == 0
    assert (parent / "summary.json").exists() and (parent / "plan" / "summary.json").exists()


def test_empty_folder_can_be_written(tmp_path):
    scen = _scenario(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["run", str(scen), "--out", str(tmp_path / "empty"), "--quiet"]) == 0
    assert (tmp_path / "empty" / "summary.json").exists()


def test_sigterm_while_writing_leaves_no_temporary(tmp_path):
    """The signal arrives while the temporary folder exists: it is removed, and the previous
    output is either still there whole or replaced whole."""
    scen = _scenario(tmp_path, figures=True)
    out = tmp_path / "out"
    assert main(["run", str(scen), "--out", str(out), "--quiet"]) == 0
    before = _tree(out)
    p = subprocess.Popen([sys.executable, "-m", "sim", "run", str(scen), "--out", str(out),
                          "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = False
    deadline = time.monotonic() + 120
    while p.poll() is None and time.monotonic() < deadline:
        if any(q.name.startswith(".out.tmp-") for q in tmp_path.iterdir()):
            p.send_signal(signal.SIGTERM)
            seen = True
            break
        time.sleep(0.001)
    _, err = p.communicate(timeout=120)
    assert seen, "the run finished before its temporary folder could be seen"
    assert p.returncode in (0, 128 + signal.SIGTERM), err
    if p.returncode:
        assert "interrupted" in err and "Traceback" not in err
    assert sorted(q.name for q in tmp_path.iterdir()) == ["out", "s.yaml"]
    assert _tree(out) == before  # same seed: whole old or whole new are byte-identical
