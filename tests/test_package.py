"""The package as a user installs it: a wheel in a fresh venv, no checkout beside it."""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT
from setuptools import find_packages

from sim.cli import main


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    root = ROOT
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(root)], check=True, capture_output=True, timeout=600)
    (whl,) = dist.glob("floodgate-*.whl")
    return whl


def test_wheel_carries_every_package_profiles_and_examples(wheel, root):
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in find_packages(str(root), include=["sim*"]):
        assert f"{pkg.replace('.', '/')}/__init__.py" in names, pkg
    shipped = {p.name for p in (root / "sim/data/profiles").glob("*.json")}
    assert shipped and {f"sim/data/profiles/{n}" for n in shipped} <= set(names)
    examples = {str(p.relative_to(root / "scenarios")) for p in (root / "scenarios").rglob("*.yaml")}
    assert {f"sim/data/examples/{e}" for e in examples} <= set(names)
    scripts = {p.name for p in (root / "sim/live/lua").glob("*.lua")}  # the Redis limiters
    assert "token_bucket.lua" in scripts and {f"sim/live/lua/{n}" for n in scripts} <= set(names)


@pytest.mark.slow
def test_fresh_venv_init_run_plan(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    # The dependencies come from the test's own environment (a path line, so its .pth files,
    # among them the checkout's editable hook, are not run); floodgate itself from the wheel.
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(purelib)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLOODGATE_PROFILES")}

    def fg(*args):
        p = subprocess.run([str(py), "-m", "sim", *args], cwd=work, env=env, capture_output=True,
                           text=True, timeout=600)
        assert "Traceback" not in p.stderr, p.stderr
        return p

    where = subprocess.run([str(py), "-c", "import sim; print(sim.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(purelib)), where
    assert fg("--version").stdout.strip().startswith("floodgate ")
    assert fg("profiles", "--json").returncode == 0
    assert fg("init", "surge").returncode == 0  # the default example: ghibli_2025
    r = fg("run", "surge/scenario.yaml", "--horizon", "2h", "--quiet", "--json", "--out", "o")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["tiers"]
    assert fg("init", "small", "--example", "validation_small").returncode == 0
    p = fg("plan", "small/scenario.yaml", "--reps", "1", "--jobs", "1", "--json", "--quiet")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["min_gpus"] >= 1


def test_init_refuses_to_overwrite_and_names_examples(tmp_path, capsys):
    assert main(["init", str(tmp_path / "d"), "--example", "policies/token_bucket"]) == 0
    body = (tmp_path / "d" / "scenario.yaml").read_bytes()
    capsys.readouterr()
    assert main(["init", str(tmp_path / "d")]) == 2
    assert "already holds a scenario.yaml" in capsys.readouterr().err
    assert (tmp_path / "d" / "scenario.yaml").read_bytes() == body
    assert main(["init", str(tmp_path / "e"), "--example", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ghibli_2025" in err and "ghibli_whatif" not in err


def test_missing_extra_is_one_line(tmp_path):
    # A real missing import: run the CLI with the serve extra's fastapi hidden from the path.
    code = ("import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('fastapi', 'uvicorn'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from sim.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    import yaml
    from helpers import queue_scenario

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(queue_scenario(1.0, 1.0, 1, 10.0)))
    p = subprocess.run([sys.executable, "-c", code, "serve", str(tmp_path / "s.yaml"), "--port", "0"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert re.fullmatch(r"error: floodgate serve needs: pip install 'floodgate\[serve\]' "
                        r"\((fastapi|uvicorn) is not installed\)\n", p.stderr), p.stderr


def test_help_imports_nothing_heavy_and_every_command_has_help():
    """`floodgate --help` must start fast: it lists the commands without importing numpy,
    pandas, numba or pydantic (0.08 s measured here against a 0.3 s target)."""
    code = ("import sys\nfrom sim.cli import main\nrc = main(['--help'])\n"
            "heavy = sorted(m for m in ('numpy', 'pandas', 'numba', 'pydantic', 'matplotlib') "
            "if m in sys.modules)\nprint(rc, heavy)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip().splitlines()[-1] == "0 []", p.stdout + p.stderr
    from sim.cli import COMMANDS, build_parser

    listed = build_parser([]).format_help()
    for name, (_, summary) in COMMANDS.items():
        assert name in listed and summary.split()[0] in listed
        p = subprocess.run([sys.executable, "-m", "sim", name, "--help"], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0 and f"usage: floodgate {name}" in p.stdout, (name, p.stderr)
        assert "Example: floodgate " + name in " ".join(p.stdout.split()), (name, p.stdout)
