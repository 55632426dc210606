"""Atomic output that never deletes what Floodgate did not write.

Every output folder carries a marker file (`MARKER`) listing the entries Floodgate put there.
`write_dir` may replace a folder only when it is missing, empty, marked, or holds nothing but
marked output folders (the `out/<scenario>/` parent of a plan, say). When it replaces one, only
the entries the old marker lists go; anything else inside (a plan folder, a live log, a user's
note) moves into the new folder untouched. A file, a symbolic link, a FIFO, or a folder with
anything else in it is refused with an `InputError` — and `check_out` says so before a run
starts, so no simulation is wasted on a destination that cannot be written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

from sim.errors import InputError

MARKER = ".floodgate.json"
# mkdtemp adds ".{name}.tmp-" and 8 random characters; the name must leave room for them.
_TMP_EXTRA = len(".") + len(".tmp-") + 8


def _marker(d: Path) -> dict | None:
    """The marker's contents, or None if `d` holds no readable Floodgate marker."""
    try:
        m = json.loads((d / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("written_by") != "floodgate":
        return None
    return m


def _is_output(d: Path) -> bool:
    return d.is_dir() and not d.is_symlink() and _marker(d) is not None


def _name_max(d: Path) -> int:
    try:
        return os.pathconf(d, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_out(target: Path | str, flag: str = "--out") -> Path:
    """The destination `write_dir(target, ...)` will accept, checked without writing anything.

    Raises InputError(flag, target, why) for: an empty path; a name of `.`/`..`; a name too long
    for the file system; a path under a file; a folder that cannot be written; an existing file,
    symlink or special file; an existing folder holding anything Floodgate did not write."""
    raw = str(target)
    if raw.strip() == "":
        raise InputError(flag, repr(raw), "an output folder is needed, not an empty path")
    target = Path(raw)
    name = target.name
    if name in ("", ".", "..") or raw.rstrip("/").endswith(("/.", "/..")) or raw in (".", ".."):
        raise InputError(flag, raw, "name a folder of its own (not '.' or '..')")
    # The nearest folder that exists: it must be a folder and writable.
    anc = target.parent
    while not anc.exists() and anc != anc.parent:
        if anc.is_symlink():  # a dangling link on the way
            raise InputError(flag, raw, f"{str(anc)!r} is a broken symbolic link")
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(flag, raw, f"{str(anc)!r} is a file, not a folder")
    limit = _name_max(anc)
    for part in target.parts:
        if len(part.encode()) > limit - _TMP_EXTRA and part != "/":
            raise InputError(flag, raw, f"the name {part[:40]!r}... is longer than the "
                             f"{limit - _TMP_EXTRA} bytes this file system allows here")
    try:  # os.access says yes to root even on read-only mounts and /proc: try it for real.
        probe = tempfile.mkdtemp(prefix=".floodgate-probe-", dir=anc)
        os.rmdir(probe)
    except OSError as e:
        raise InputError(flag, raw, f"cannot write in {str(anc)!r}: {e.strerror}") from None
    if target.is_symlink():
        raise InputError(flag, raw, "is a symbolic link; Floodgate writes only to a folder of "
                         "its own (remove the link or choose another --out)")
    if target.exists():
        if not target.is_dir():
            raise InputError(flag, raw, "exists and is not a folder; Floodgate will not replace "
                             "it (remove it or choose another --out)")
        if _marker(target) is None:
            foreign = sorted(p.name for p in target.iterdir() if not _is_output(p))
            if foreign:
                shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                raise InputError(flag, raw, f"is a folder Floodgate did not write (it holds "
                                 f"{shown}); it is left untouched: choose another --out, or "
                                 f"empty it")
    return target


def write_dir(target: Path, fill: Callable[[Path], None], kind: str = "output") -> Path:
    """Call fill(tmpdir), then put it in place of `target` in one rename.

    Nothing half-written is left behind if fill fails or a signal arrives; an existing output is
    replaced only under `check_out`'s rules, and whatever in it Floodgate did not list in its
    marker moves into the new folder."""
    target = check_out(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        fill(tmp)
        entries = sorted(p.name for p in tmp.iterdir())
        from sim import __version__

        (tmp / MARKER).write_text(json.dumps({"written_by": "floodgate", "version": __version__,
                                              "kind": kind, "entries": entries}, indent=1) + "\n")
        _swap(target, tmp, set(entries))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap(target: Path, tmp: Path, new: set[str]) -> None:
    """Move `tmp` in as `target`, carrying over every old entry Floodgate did not write."""
    if not target.exists():
        os.rename(tmp, target)
        return
    check_out(target)  # the folder may have changed while fill ran
    m = _marker(target)
    ours = set(m.get("entries", [])) if m else set()
    keep = [p.name for p in target.iterdir() if p.name not in ours and p.name != MARKER]
    clash = sorted(k for k in keep if k in new)
    if clash:
        raise InputError("--out", str(target), f"holds {', '.join(clash)}, which Floodgate did not "
                         f"write and would overwrite; move it away first")
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    # No signal between the two renames and the carry-over: either the old folder is in place or
    # the new one is, with the kept entries inside.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        os.rename(target, old)
        os.rename(tmp, target)
        for k in keep:
            os.rename(old / k, target / k)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    shutil.rmtree(old, ignore_errors=True)


def mark_dir(d: Path, kind: str) -> Path:
    """Create folder `d` for files Floodgate appends to (a live log), marked as Floodgate's own
    with no entries listed, so a later output written over it keeps every file. A folder that
    already exists is left as it is."""
    d = Path(d)
    if not d.exists():
        d.mkdir(parents=True)
        from sim import __version__

        write_file(d / MARKER, json.dumps({"written_by": "floodgate", "version": __version__,
                                           "kind": kind, "entries": []}, indent=1) + "\n")
    return d


def write_file(path: Path, data: str | bytes) -> None:
    """Write one file atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dump_json(obj) -> str:
    """Strict JSON (no NaN/Infinity: a missing figure is null) for every file Floodgate writes."""
    from sim.jsonout import dumps

    return dumps(obj, indent=2, sort_keys=False) + "\n"
