import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]

from redis_server import redis_server  # noqa: E402, F401 (a real Redis, for any test)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def _strict_json_outputs(request):
    """After each test that used tmp_path: every .json/.jsonl it left parses with a strict
    parser (no NaN/Infinity), so no output of the suite is non-JSON (issue 18)."""
    base = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if base is None:
        return
    from sim.jsonout import loads_strict

    for p in base.rglob("*.json*"):
        if p.suffix not in (".json", ".jsonl") or not p.is_file() or p.is_symlink():
            continue
        text = p.read_text(errors="replace")
        if p.name.startswith(("bad", "prof", "broken")) or "/in/" in str(p):
            continue  # inputs the tests wrote on purpose (bad profiles)
        lines = text.splitlines() if p.suffix == ".jsonl" else [text]
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    loads_strict(line)
                except ValueError as e:
                    pytest.fail(f"{p} line {n}: not strict JSON: {e}")


def pytest_sessionfinish(session, exitstatus):
    """The same check over every temporary folder of the session (module fixtures too)."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or factory._basetemp is None:
        return
    from sim.jsonout import loads_strict

    bad = []
    for p in factory.getbasetemp().rglob("*.json*"):
        if p.suffix not in (".json", ".jsonl") or not p.is_file() or p.is_symlink():
            continue
        if p.name.startswith(("bad", "prof", "broken")):
            continue
        text = p.read_text(errors="replace")
        for line in text.splitlines() if p.suffix == ".jsonl" else [text]:
            try:
                line.strip() and loads_strict(line)
            except ValueError as e:
                bad.append(f"{p}: {e}")
                break
    if bad:
        print("\nnot strict JSON:\n  " + "\n  ".join(bad[:20]))
        session.exitstatus = 1
