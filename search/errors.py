"""The project's one error grammar for user input.

Every problem reads "<where>: <thing> must <rule>, but got <name=value>. <fix>" and all problems
of one file are collected and raised together, so a user fixes a sweep file in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        return f"{where}: {self.message}" if where else self.message


class UserError(Exception):
    """Bad input from the user: the CLI prints it without a traceback and exits with code 2.
    `notes` follow the problems once, however many problems they explain."""

    def __init__(self, problems: list[Problem] | str, notes: list[str] | None = None) -> None:
        self.problems = [Problem(problems)] if isinstance(problems, str) else list(problems)
        self.notes = list(notes or [])
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join([*(str(p) for p in self.problems), *self.notes])


class SweepError(UserError):
    """A sweep file that cannot run, with every problem found in it."""


class SweepStopped(Exception):
    """The sweep gave up before its budget (too many failed trials); the message summarises why.
    Finished trials are kept, and the same command continues the study."""


class ExportFailed(Exception):
    """An ONNX exporter or an Olive pass failed on a model it should handle; the message carries the
    tool's own words. Nothing is registered and no alias moves."""


class Problems:
    """Collects problems while a file is checked, then raises them all at once."""

    def __init__(self, file: str | None = None, lines: dict[tuple, int] | None = None) -> None:
        self.file = file
        self._lines = lines or {}
        self.items: list[Problem] = []
        self.notes: dict[str, None] = {}  # said once after the problems (a list of valid names...)

    def add(self, path: tuple, message: str) -> None:
        """Record a problem at `path` (the key path in the file; the nearest known line is used)."""
        line = None
        for end in range(len(path), -1, -1):
            if path[:end] in self._lines:
                line = self._lines[path[:end]]
                break
        self.items.append(Problem(message, self.file, line))

    def note(self, text: str) -> None:
        self.notes[text] = None

    def raise_if_any(self) -> None:
        if self.items:
            raise SweepError(sorted(self.items, key=lambda p: p.line or 0), list(self.notes))
