"""Typed, bounded command-line values and a parser whose errors are one `error:` line.

argparse would print a usage block and then the error; the promise for bad input is one line
`error: <where>: <field>: <what>` and exit 2 (sim.errors), so the parser says it that way.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

MAX_SEED = 2**63 - 1


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, exit 2 (subparsers inherit it)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {self.prog}: {message.splitlines()[0][:300]}", file=sys.stderr)
        sys.exit(2)


def int_in(lo: int, hi: int, name: str = "an integer") -> Callable[[str], int]:
    """An argparse type: an integer in lo..hi (short strings only: no 5,000-digit integers)."""

    def parse(s: str) -> int:
        t = s.strip()
        if len(t) > 30 or not t.lstrip("+-").isdigit():
            raise argparse.ArgumentTypeError(f"expected {name} in {lo}..{hi}, got {s[:40]!r}")
        v = int(t)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected {name} in {lo}..{hi}, got {v}")
        return v

    parse.__name__ = name
    return parse


def float_in(lo: float, hi: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi] (or (lo, hi] with low_open)."""

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s[:40]!r}") from None
        if not math.isfinite(v) or v > hi or v < lo or (low_open and v == lo):
            rng = f"{'(' if low_open else '['}{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"expected a finite number in {rng}, got {s[:40]!r}")
        return v

    return parse


seed = int_in(0, MAX_SEED, "a seed")


def size(s: str) -> int:
    """An argparse type: a byte size such as 8G or 512M."""
    from sim.budget import parse_bytes

    try:
        return parse_bytes(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
