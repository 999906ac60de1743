"""Set keys of a params YAML text in place, keeping its comments, order and layout.

`params.yaml` is read by people as much as by the stages: its comments give each key's meaning. Loading and dumping
it would lose them, so a change is made on the lines themselves: `set_keys` replaces the value of each dotted key
on its own line (keeping the comment after it) and checks that the new text loads as exactly the old mapping with
those keys replaced, so a layout it cannot edit safely is an error, never a silently different file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")


class ParamsEditError(ValueError):
    """A key that cannot be set on the text's lines; the message names it."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}: the leaves of a nested mapping by dotted key."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `flatten`: {"train.lr": 0.1} -> {"train": {"lr": 0.1}}."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update`'s leaves replaced or added, recursively (neither is modified)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def yaml_scalar(value: Any) -> str:
    """A value as it is written after `key: ` on one line (flow style for lists)."""
    if isinstance(value, Mapping):
        raise ParamsEditError(f"a mapping cannot be written on one line: {value!r}")
    return yaml.safe_dump([value], default_flow_style=True, sort_keys=False).strip()[1:-1]


def _split_comment(rest: str) -> tuple[str, str]:
    """(value text, comment with its leading spaces) of what follows `key:` on a line."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            value = rest[:i].rstrip()
            return value, rest[len(value) : i] + rest[i:]
    return rest.rstrip(), ""


def _key_lines(lines: list[str]) -> dict[str, int]:
    """Dotted key -> index of the line holding it, for block-style mappings (comments and blank lines skipped)."""
    found: dict[str, int] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings enclosing the current line
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _KEY_LINE.match(line.rstrip("\n"))
        if not match:
            continue  # a list item or a continuation line: no key of its own
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [match["key"]])
        found[dotted] = i
        stack.append((indent, match["key"]))
    return found


def _set_line(line: str, value: Any) -> str:
    match = _KEY_LINE.match(line.rstrip("\n"))
    assert match is not None
    old, comment = _split_comment(match["rest"])
    prefix = f"{match['indent']}{match['key']}: {yaml_scalar(value)}"
    if comment:  # keep the comment's column where the new value leaves room for it
        column = len(match["indent"]) + len(match["key"]) + 1 + len(old) + len(comment) - len(comment.lstrip())
        comment = " " * max(column - len(prefix), 1) + comment.lstrip()
    ending = "\n" if line.endswith("\n") else ""
    return f"{prefix}{comment}{ending}"


def _insert_line(lines: list[str], positions: dict[str, int], dotted: str, value: Any) -> None:
    """Add `dotted` as the last key of its parent mapping, indented as the parent's other keys."""
    parent, _, leaf = dotted.rpartition(".")
    if not parent or parent not in positions:
        raise ParamsEditError(f"{dotted}: neither it nor its section is written in the file; add it by hand")
    start = positions[parent]
    children = [i for k, i in positions.items() if k.startswith(parent + ".") and k.count(".") == dotted.count(".")]
    if children:
        indent = len(lines[children[0]]) - len(lines[children[0]].lstrip(" "))
    else:
        indent = len(lines[start]) - len(lines[start].lstrip(" ")) + 2
    inside = [i for k, i in positions.items() if k.startswith(parent + ".")]
    at = max(inside, default=start) + 1
    lines.insert(at, f"{' ' * indent}{leaf}: {yaml_scalar(value)}\n")


def set_keys(text: str, changes: Mapping[str, Any], source: str = "params.yaml") -> str:
    """`text` with each dotted key of `changes` set to its value, comments and layout kept.

    A key missing from the text is added at the end of its section. Raises `ParamsEditError` (naming the key)
    when the text's layout does not allow a safe edit: the result must load as the old mapping with exactly
    these keys changed.
    """
    lines = text.splitlines(keepends=True)
    for dotted, value in changes.items():
        positions = _key_lines(lines)
        if dotted in positions:
            i = positions[dotted]
            if any(k.startswith(dotted + ".") for k in positions):
                raise ParamsEditError(f"{source}: {dotted} is a section; set its keys one by one")
            lines[i] = _set_line(lines[i], value)
        else:
            _insert_line(lines, positions, dotted, value)
    new_text = "".join(lines)
    expected = merge(yaml.safe_load(text) or {}, nest(changes))
    try:
        result = yaml.safe_load(new_text)
    except yaml.YAMLError:
        result = None
    if result != expected:
        raise ParamsEditError(
            f"{source}: setting {', '.join(changes)} on its lines did not give the expected values "
            "(a layout this editor does not handle: flow-style sections or multi-line values); edit it by hand"
        )
    return new_text
