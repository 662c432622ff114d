"""Rewrite the example outputs in README.md and the manual from commands run against the shipped demo.

    python docs/examples.py                # run the demo in a temp folder, rewrite every marked block
    python docs/examples.py --check        # the same run; exit 1 with a diff where a block differs
    python docs/examples.py --demo DIR     # keep the demo's sweep in DIR: the next call reuses it

With --demo DIR the sweep runs once, into DIR/demo, and is kept as it ended in DIR/demo.sweep; each
later call starts the commands from that copy again, put back at the same path (so the stores find
their own folder and a promote registers version 1 again), and takes seconds, not the sweep's minute.
Remove DIR after a change to what a trial computes.

An example is a comment naming the command, then a fenced block that starts with the command:

    <!-- output: lorasweep compare 0 1 2 7 -->
    ```
    $ lorasweep compare 0 1 2 7
    ...what it printed...
    ```

The demo (`lorasweep -q run spaces/demo.yaml`, about a minute on 2 quiet cores; the commands,
promote most of all, half a minute more) runs once, in a folder of its own; then each marked command
runs there, in page order (README.md, then docs/ by name), in this process, its standard output and
error captured together. Figures that differ from run to run of the same code (durations,
timestamps, run ids, hashes, the folder, the load) are replaced by placeholders (`…`, `<time>`,
`<run-id>`, `<sha256>`), in the pages and in what a check compares alike; everything else
(parameters, metrics, states, pruned steps, the parity gate's figures) must match.
tests/test_demo.py checks the pages against the demo run it makes. Generated reference pages
(docs/reference/, written by docs/reference.py and `python -m lorasweep.search.sweepfile`) hold no
examples.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REGENERATE = "python docs/examples.py"

# A marker line, then a fenced block: ``` or ```text ... ``` on lines of their own.
MARKED = re.compile(
    r"^<!-- output: (?P<command>lorasweep [^\n]*?) -->\n(?P<fence>```[^\n]*)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)

# Table columns whose figures are the machine's, not the sweep's: their cells become "…".
VOLATILE_COLUMNS = {
    "seconds",
    "last activity",
    "load s",
    "ms/token",
    "speed",
    "load ms",
    "switch ms",
    "merged",
    "spread",
}
# Anywhere in a line: (pattern, placeholder). Hashes before run ids (a run id is 32 hex digits).
VOLATILE = [
    (re.compile(r"\b[0-9a-f]{64}\b"), "<sha256>"),
    (re.compile(r"\b[0-9a-f]{32}\b"), "<run-id>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?"), "<time>"),
    (re.compile(r"(?<![\w.])\d+(?:\.\d+)? ?(ms|s|min)\b(?!/)"), r"… \1"),  # 12.3 s, 0.20 ms: not ms/token
    # the machine's load and cores, and which timings they made unreliable (promote's timing line)
    (re.compile(r"\bload average \d+(?:\.\d+)?"), "load average …"),
    (re.compile(r"\b\d+ cores\b"), "… cores"),
    (re.compile(r"(\bunreliable\b[^:\n]*\): ).+$", re.MULTILINE), r"\1…"),
]


class Example(NamedTuple):
    page: Path
    command: str  # as the marker names it: "lorasweep compare 0 1 2 7"
    body: str  # the block's text between its fences, with the final newline
    start: int  # the block's body's span in the page's text
    end: int


def pages() -> list[Path]:
    """The pages that may hold examples: README.md and the manual, not its generated reference."""
    manual = sorted(p for p in DOCS.rglob("*.md") if not p.is_relative_to(DOCS / "reference"))
    return [ROOT / "README.md", *manual]


def examples(page: Path) -> list[Example]:
    text = page.read_text(encoding="utf-8")
    return [
        Example(page, m.group("command"), m.group("body"), m.start("body"), m.end("body"))
        for m in MARKED.finditer(text)
    ]


def all_examples() -> list[Example]:
    return [example for page in pages() for example in examples(page)]


# -- running the demo and the commands -----------------------------------------------------------
@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """In `folder`, offline, with the demo's own stores (no tracking URI or storage from outside)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "LORASWEEP_STORAGE", "HF_HUB_OFFLINE")}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("LORASWEEP_STORAGE", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        with contextlib.chdir(folder):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_demo(folder: Path) -> None:
    """The shipped demo, as `make demo` runs it, in `folder` (its mlruns/ lands there). A folder
    that holds it already is left as it is: `run` would find the study finished."""
    from lorasweep.search.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "mlruns").exists():
        return
    shutil.copytree(ROOT / "spaces", folder / "spaces", dirs_exist_ok=True)
    with _inside(folder):
        code = main(["-q", "run", "spaces/demo.yaml"])
    if code != 0:
        raise RuntimeError(f"the demo sweep exited {code} in {folder}")


def kept_demo(keep: Path) -> Path:
    """keep/demo as the demo's sweep left it: run once and copied to keep/demo.sweep, or put back
    from that copy (at the same path: the stores record where they are)."""
    folder, sweep = keep / "demo", keep / "demo.sweep"
    if sweep.exists():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(sweep, folder, symlinks=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        run_demo(folder)
        shutil.copytree(folder, sweep, symlinks=True)
    return folder


def output(command: str, folder: Path) -> str:
    """What `command` prints in `folder`, standard output and error in the order written."""
    from lorasweep.search.cli import main

    argv = shlex.split(command)[1:]  # the "lorasweep" the marker names
    captured = io.StringIO()
    with _inside(folder), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        try:
            main(argv)
        except SystemExit:  # argparse's own refusals print, then exit
            pass
    return captured.getvalue()


# -- what may differ from run to run -------------------------------------------------------------
def _spans(block: list[str]) -> list[tuple[int, int]]:
    """The columns of an aligned table, left- or right-aligned: runs of positions where some line
    has a character, between positions that are blank on every line."""
    width = max(len(line) for line in block)
    blank = [all(k >= len(line) or line[k] == " " for line in block) for k in range(width)]
    spans, start = [], None
    for k, is_blank in enumerate([*blank, True]):
        if not is_blank and start is None:
            start = k
        elif is_blank and start is not None:
            spans.append((start, k))
            start = None
    return spans


def _blank_volatile(block: list[str]) -> list[str]:
    """The table's volatile cells become "…", aligned as the figure was (a check compares words, not
    alignment: another machine's figure one character wider moves its neighbours)."""
    width = max(len(line) for line in block)
    lines = [line.ljust(width) for line in block]
    spans = _spans(block)
    volatile = [(a, b) for a, b in spans if lines[0][a:b].strip() in VOLATILE_COLUMNS]
    filled = [[line[a:b] for line in lines[1:] if line[a:b].strip() not in ("", "-")] for a, b in volatile]
    # At the column's edge, whatever the width of this run's figures: its right end where the
    # column is right-aligned (the header ends there, and so do the figures if it fills the column).
    right = [
        lines[0][b - 1] != " " and (lines[0][a] == " " or all(cell[-1] != " " for cell in cells))
        for (a, b), cells in zip(volatile, filled, strict=True)
    ]
    out = [block[0]]
    for line in lines[1:]:
        for (a, b), to_right in zip(volatile, right, strict=True):
            if line[a:b].strip() not in ("", "-"):
                line = line[:a] + ("…".rjust(b - a) if to_right else "…".ljust(b - a)) + line[b:]
        out.append(line.rstrip())
    return out


def _tables(lines: list[str]) -> list[str]:
    """Tables with a volatile column: a header line naming one (2 spaces or more between names),
    then the rows, the lines after it that are laid out in columns too."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        names = {name.strip(" |") for name in re.split(r" {2,}", lines[i].strip())}
        if not names & VOLATILE_COLUMNS:
            out.append(lines[i])
            i += 1
            continue
        block = [lines[i]]
        i += 1
        while i < len(lines) and re.search(r"\S {2,}\S", lines[i]):
            block.append(lines[i])
            i += 1
        out += _blank_volatile(block)
    return out


def normalize(text: str, folder: Path | None = None) -> str:
    """`text` with what differs from run to run replaced by placeholders."""
    if folder is not None:
        for spelling in {str(folder), str(folder.resolve())}:
            text = text.replace(spelling + os.sep, "").replace(spelling, ".")
    for pattern, placeholder in VOLATILE:
        text = pattern.sub(placeholder, text)
    lines = [line.rstrip() for line in _tables(text.splitlines())]
    return "\n".join(lines).strip("\n") + "\n"


def block(command: str, folder: Path) -> str:
    """A marked block's body: the command, then what it printed, normalized."""
    return f"$ {command}\n" + normalize(output(command, folder), folder)


def comparable(body: str) -> str:
    """What a check compares: the body's words, whatever the alignment (a right-aligned column
    moves with the width of its widest figure, which may be a placeholder's neighbour)."""
    return "\n".join(" ".join(line.split()) for line in body.strip().splitlines())


# -- the pages -----------------------------------------------------------------------------------
def fresh_blocks(folder: Path) -> dict[str, str]:
    """Every marked command's block, run once in `folder` (where the demo ran), in page order."""
    fresh: dict[str, str] = {}
    for example in all_examples():
        if example.command not in fresh:
            fresh[example.command] = block(example.command, folder)
    return fresh


def rewrite(fresh: dict[str, str]) -> list[Path]:
    """Write the fresh blocks into their pages; returns the pages that changed."""
    changed = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new = text
        for example in reversed(examples(page)):  # from the end: earlier spans stay where they are
            new = new[: example.start] + fresh[example.command] + new[example.end :]
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed.append(page)
    return changed


def differences(fresh: dict[str, str]) -> list[str]:
    """A unified diff for each committed block whose words differ from the fresh one's."""
    found = []
    for example in all_examples():
        now = fresh[example.command]
        if comparable(example.body) != comparable(now):
            where = example.page.relative_to(ROOT)
            diff = difflib.unified_diff(
                example.body.splitlines(),
                now.splitlines(),
                f"{where}: {example.command} (committed)",
                f"{where}: {example.command} (printed now)",
                lineterm="",
            )
            found.append("\n".join(diff))
    return found


def stale_message(found: list[str]) -> str:
    return "\n\n".join(found) + f"\n\n{len(found)} example(s) differ from the demo: run {REGENERATE}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff where a block differs")
    parser.add_argument("--demo", type=Path, help="a folder to keep the demo's sweep in, for the next call")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.demo is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lorasweep-examples-")))
            run_demo(folder.resolve())
        else:
            folder = kept_demo(args.demo.resolve())
        print(f"the demo: {folder}", file=sys.stderr)
        fresh = fresh_blocks(folder.resolve())
    if args.check:
        found = differences(fresh)
        if found:
            print(stale_message(found), file=sys.stderr)
            return 1
        print(f"{len(fresh)} examples match the demo")
        return 0
    for page in rewrite(fresh):
        print(f"wrote {page.relative_to(ROOT)}")
    print(f"{len(fresh)} examples from the demo")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
