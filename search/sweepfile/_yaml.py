"""Safe YAML loading that remembers on which line every key stands, for file:line errors."""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import yaml

from ..errors import Problem, SweepError


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-5` as a float. YAML 1.1 wants a dot (`1.0e-5`) and would hand a
    learning rate written the way everyone writes it back as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


# A sweep file of any real size holds a few hundred values; aliases may not inflate it past this.
MAX_VALUES = 100_000


def load_yaml(path: Path, text: str | None = None) -> tuple[dict[str, Any], dict[tuple[Any, ...], int], str]:
    """Return (data, lines, text): the safe-loaded mapping, key path -> 1-based line, raw text.
    With `text`, that is parsed instead of the file (which need not exist)."""
    where = str(path)
    try:
        if text is None:
            _check_regular(path)
            text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError(f"{where}: sweep file must exist, but got path={where}. Check the path.") from None
    except OSError as e:  # a permission, an I/O error: the reason, not a traceback
        raise SweepError(
            f"{where}: sweep file must be readable, but got path={where}: {e.strerror or e}. "
            "Check its permissions."
        ) from None
    except UnicodeDecodeError as e:
        at = e.object[: e.start].count(b"\n") + 1
        bad = f"the byte {e.object[e.start]:#x}, which UTF-8 cannot decode"
        raise _error(
            f"the sweep file must be UTF-8, but got {bad}. Save the file as UTF-8.", where, at
        ) from None
    try:
        # One parse gives both the node tree (with positions) and, from it, the plain values.
        node = yaml.compose(text, Loader=_Loader)
        _check_expansion(node, where)
        data = _Loader(text).construct_document(node) if node is not None else None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise _error(
            "the file must nest its values a few levels deep, but got nesting too deep to read.", where
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        column = f", column {mark.column + 1}" if mark else ""
        reason = getattr(e, "problem", None) or str(e)
        context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and context_mark:  # where the broken construct began, often the real culprit
            reason += f" ({context} on line {context_mark.line + 1})"
        raise _error(
            f"the file must be valid YAML, but got a syntax error{column}: {reason}.", where, line
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _error(f"the file must hold a mapping of sections, but got a {type(data).__name__}.", where)
    lines: dict[tuple[Any, ...], int] = {}
    duplicates: list[Problem] = []
    _collect_lines(node, (), lines, duplicates, where)
    if duplicates:  # YAML would silently keep the last one
        raise SweepError(duplicates)
    return data, lines, text


def _error(message: str, where: str, line: int | None = 1) -> SweepError:
    """A problem that stops the reading of the file, at its line (the file's first by default)."""
    return SweepError([Problem(message, where, line)])


def _check_regular(path: Path) -> None:
    """A sweep file is a plain file. A folder would fail with IsADirectoryError, and a FIFO or a
    device would block the read until something writes to it (or forever)."""
    mode = path.stat().st_mode  # FileNotFoundError: said by the caller
    if stat.S_ISREG(mode):
        return
    kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a plain file"
    fix = "Name the YAML file in it" if stat.S_ISDIR(mode) else "Save the sweep as a file and name that"
    raise SweepError(f"{path}: sweep file must be a YAML file, but got path={path}, {kind}. {fix}.")


def _check_expansion(node: yaml.Node | None, where: str) -> None:
    """Refuse a document whose aliases expand it past MAX_VALUES values (a "billion laughs": a few
    hundred bytes of anchors that name lists of lists of the same list). PyYAML builds it cheaply,
    sharing the repeated parts, but everything that walks it afterwards (the line map, the checks,
    a repr) would visit every expanded value. Counted once per distinct node, so this is cheap."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) not in sizes:
            sizes[id(n)] = 0  # a node inside itself (a recursive alias) counts once, not forever
            if isinstance(n, yaml.MappingNode):
                children = [c for pair in n.value for c in pair]
            elif isinstance(n, yaml.SequenceNode):
                children = n.value
            else:
                children = []
            sizes[id(n)] = min(1 + sum(size(c) for c in children), MAX_VALUES + 1)
        return sizes[id(n)]

    if node is not None and size(node) > MAX_VALUES:
        raise _error(
            f"the file must expand to at most {MAX_VALUES:,} values, but its anchors and aliases "
            "(&name, *name) expand it to more. Write the values out, or use fewer aliases.",
            where,
        )


def _collect_lines(
    node: yaml.Node | None,
    path: tuple[Any, ...],
    lines: dict[tuple[Any, ...], int],
    duplicates: list[Problem],
    where: str,
) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            line = key_node.start_mark.line + 1
            if key_path in lines:
                name = ".".join(map(str, key_path))
                again = f"{name} again (first on line {lines[key_path]})"
                duplicates.append(
                    Problem(f"each key must appear once, but got {again}. Keep one.", where, line)
                )
                continue
            lines[key_path] = line
            _collect_lines(value_node, key_path, lines, duplicates, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _collect_lines(item, (*path, i), lines, duplicates, where)
