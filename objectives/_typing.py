"""Whether a value fits a type hint, and a did-you-mean for a misspelt name: the two checks that both
the hyperparameter names (params.py) and the sweep file's typed sections rest on.

Specs and library fields use few types (str, int, float, bool, Literal, Optional, tuple[str, ...]),
so checking them takes one small function rather than a schema library.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Literal


def did_you_mean(key: Any, valid: typing.Iterable[str], n: int = 1) -> str:
    """ " Did you mean 'x'?" for the closest valid names, or "" when none is close."""
    close = difflib.get_close_matches(str(key), list(valid), n=n)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


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
        strings = isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
        return strings, tuple(value) if strings else value, "a list of strings"
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
