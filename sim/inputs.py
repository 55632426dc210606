"""Reading user files: UTF-8 text within a size limit, and YAML with limits.

Every reader of a scenario, variant, profile or key table goes through here, so that a binary,
latin-1 or UTF-16 file, a file nested thousands deep, a key given twice or an integer with
thousands of digits is one InputError (`error: <file>: <field>: <what>`), never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from sim.errors import InputError

MAX_FILE_BYTES = 16 * 2**20  # a scenario, profile or key table larger than this is a mistake
MAX_DEPTH = 64  # nesting of mappings/lists; the shipped files use at most 6
MAX_INT_DIGITS = 30  # no field needs more; Python refuses >4300 and pydantic recurses on less


def read_text(path: str | Path, limit: int = MAX_FILE_BYTES) -> str:
    """A file's text as UTF-8 (a BOM is accepted); anything else is an InputError."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(str(p), "(file)", "no such file") from None
    except IsADirectoryError:
        raise InputError(str(p), "(file)", "is a folder, not a file") from None
    except OSError as e:
        raise InputError(str(p), "(file)", f"cannot read: {e.strerror or e}") from None
    if len(raw) > limit:
        raise InputError(str(p), "(file)", f"larger than {limit // 2**20} MiB")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError(str(p), "(file)", "UTF-16 text; save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(str(p), f"line {line}",
                         f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    if "\x00" in text:
        raise InputError(str(p), "(file)", "binary file (contains NUL bytes), not text")
    return text


class _Limited(Exception):
    def __init__(self, line: int, message: str):
        self.line, self.message = line, message


class _Loader(yaml.SafeLoader):
    """SafeLoader with a nesting limit, duplicate keys refused and short integers only."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Limited(self.peek_event().start_mark.line + 1,
                               f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for k, _ in node.value:
                if isinstance(k, yaml.ScalarNode):
                    key = self.construct_object(k)
                    try:
                        dup = key in seen
                    except TypeError:
                        continue
                    if dup:
                        raise _Limited(k.start_mark.line + 1, f"key {key!r} given twice")
                    seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        digits = sum(c.isdigit() for c in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise _Limited(node.start_mark.line + 1,
                           f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML text with the limits above; problems are InputErrors with a line."""
    return load_yaml_nodes(text, source)[0]


def load_yaml_nodes(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The data and the node tree it was built from (for each field's line and column)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        return (None if node is None else loader.construct_document(node)), node
    except _Limited as e:
        raise InputError(source, f"line {e.line}", e.message) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(yaml)"
        raise InputError(source, where, f"malformed YAML: {getattr(e, 'problem', None) or e}") from None
    except (ValueError, RecursionError, OverflowError) as e:  # belt and braces
        raise InputError(source, "(yaml)", f"cannot parse: {type(e).__name__}") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    return load_yaml(read_text(path), str(path))


def read_yaml_nodes(path: str | Path) -> tuple[Any, yaml.Node | None]:
    return load_yaml_nodes(read_text(path), str(path))


def position(node: yaml.Node | None, loc: tuple) -> tuple[int, int] | None:
    """1-based (line, column) of the deepest key or item of `loc` (keys and list indices)
    found in the node tree: the key itself when it is there, the mapping holding it when it
    is missing."""
    if node is None:
        return None
    mark, cur = node.start_mark, node
    for part in loc:
        if isinstance(cur, yaml.MappingNode):
            hit = next(((k, v) for k, v in cur.value
                        if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
            if hit is None:
                break
            mark, cur = hit[0].start_mark, hit[1]
        elif isinstance(cur, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(cur.value):
            cur = cur.value[part]
            mark = cur.start_mark
        else:
            break
    return mark.line + 1, mark.column + 1


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def load_json(text: str, source: str) -> Any:
    """Strict JSON (no NaN/Infinity) with the depth and integer limits of load_yaml."""
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_int=_short_int)
    except json.JSONDecodeError as e:
        raise InputError(source, f"line {e.lineno}", f"not valid JSON: {e.msg}") from None
    except _Limited as e:
        raise InputError(source, "(json)", e.message) from None
    except ValueError as e:
        raise InputError(source, "(json)", f"not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(source, "(json)", f"nested deeper than {MAX_DEPTH} levels") from None
    if depth(data) > MAX_DEPTH:
        raise InputError(source, "(json)", f"nested deeper than {MAX_DEPTH} levels")
    return data


def _short_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise _Limited(0, f"an integer of {len(s.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(s)


def depth(x: Any, limit: int = MAX_DEPTH + 1) -> int:
    """Nesting depth of lists/dicts, counted up to `limit` (iterative: no recursion limit)."""
    best, stack = 0, [(x, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            best = max(best, d)
            if d >= limit:
                return d
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return best
