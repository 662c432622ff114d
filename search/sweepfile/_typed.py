"""Typed sections: a YAML mapping checked key by key against a frozen spec dataclass (the value
checks are the trial side's `check_type`); every problem goes to the shared collector.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from lorasweep.objectives import check_type

from ..errors import Problems, unknown_key


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


# A study's, a local experiment's and a promoted model's names become folder and file names
# (mlruns/artifacts/<experiment>, reports/<study>, exports/<model>/vK): one path segment, never `.` or `..`, and short enough that
# the names built from them stay under the file systems' 255 bytes.
MAX_NAME_BYTES = 100


def name_problem(what: str, name: Any) -> str | None:
    """Why `name` cannot be a study's, a local MLflow experiment's or a promoted model's name (`what`
    says which), or None."""
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        return (
            f"{what} must use only letters, digits, '.', '-' and '_', but got name={name!r}. It names a "
            "folder: use a word such as demo-2, not a path."
        )
    if name in (".", ".."):
        return f"{what} must name a folder of its own, but got name={name!r}, a path. Use a word (e.g. demo)."
    if len(name.encode()) > MAX_NAME_BYTES:
        return (
            f"{what} must be at most {MAX_NAME_BYTES} characters (bytes in UTF-8), as it names files, "
            f"but got name={name[:20]!r}... ({len(name.encode())} bytes). Use a shorter name."
        )
    return None
