"""Typed sections: a YAML mapping checked key by key against a frozen spec dataclass.

Specs use few types (str, int, float, bool, Literal, Optional, tuple[str, ...]), so checking them
takes one small function rather than a schema library; every problem goes to the shared collector.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal

from .errors import Problems


def did_you_mean(key: Any, valid: typing.Iterable[str], n: int = 1) -> str:
    """ " Did you mean 'x'?" for the closest valid names, or "" when none is close."""
    close = difflib.get_close_matches(str(key), list(valid), n=n)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def unknown_key(what: str, key: Any, valid: typing.Iterable[str]) -> str:
    valid = list(valid)
    return f"{what} must be one of {', '.join(valid)}, but got {key!r}.{did_you_mean(key, valid)}"


def parse_section(raw: dict, section: str, cls: type, problems: Problems, base: Any = None) -> Any:
    """Map one YAML section onto a spec dataclass, checking keys and value types."""
    base = cls() if base is None else base
    values = raw.get(section)
    if values is None:
        return base
    if not isinstance(values, dict):
        problems.add((section,), f"{section} must be a mapping, but got {values!r}.")
        return base
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            problems.add((section, key), unknown_key(f"a key of {section}", key, names))
            continue
        ok, converted, expected = check_type(value, hints[key])
        if ok:
            kwargs[key] = converted
        else:
            problems.add((section, key), f"{section}.{key} must be {expected}, but got {key}={value!r}.")
    return dataclasses.replace(base, **kwargs)


def check_type(value: Any, hint: Any) -> tuple[bool, Any, str]:
    """(ok, value converted to the hint, what was expected) for the few types specs use."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args, value, "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        expected = []
        for arg in args:
            ok, converted, what = check_type(value, arg)
            if ok:
                return True, converted, what
            expected.append(what)
        return False, value, " or ".join(expected)
    if hint is type(None):
        return value is None, value, "null"
    if origin is tuple:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value) and value
        return bool(ok), tuple(value) if ok else value, "a list of strings"
    if hint is bool:
        return isinstance(value, bool), value, "true or false"
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value, "an integer"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value, "a number"
    if hint is str:
        return isinstance(value, str), value, "a string"
    return True, value, str(hint)
