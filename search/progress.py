"""What a sweep prints: one line per finished trial, and how it shows the running one (--progress).

bar: a study-level bar with the best so far and the running trial's step (tqdm; in a Jupyter kernel
with ipywidgets, tqdm's notebook widget). lines: for a log file, plain lines only: the finished
trial's, and a heartbeat for a running trial at most every HEARTBEAT_S seconds. none: nothing, as
with -q. auto: a widget in a notebook, a bar on a terminal, lines otherwise. No line is longer than
MAX_LINE characters.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import optuna
from tqdm import tqdm

from .choices import PROGRESS_MODES
from .record import DUPLICATE_OF, ERROR, RETRY_OF, TrialRecord

MAX_LINE = 300  # a line a log reader can take in: many parameters or a long error are cut
HEARTBEAT_S = 30.0  # lines mode: at most one "trial N running" line this often


def fit_line(text: str, limit: int = MAX_LINE) -> str:
    """`text` as one line of at most `limit` characters: line breaks become spaces, and what does
    not fit is cut with an ellipsis."""
    line = " ".join(text.splitlines())
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def objective_names(study: optuna.Study) -> tuple[str, ...]:
    """What each of the study's objective values is called: the metrics lorasweep set on it, else
    Optuna's own names, value0, value1... (a study created elsewhere, or one stopped before its
    metric names were set)."""
    return tuple(study.metric_names or [f"value{i}" for i in range(len(study.directions))])


def format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_params(params: dict) -> str:
    return " ".join(f"{k}={format_value(v) if isinstance(v, float) else v}" for k, v in params.items())


def trial_line(trial: optuna.trial.FrozenTrial, metrics: tuple[str, ...]) -> str:
    kept = TrialRecord.of(trial)
    if trial.state == optuna.trial.TrialState.PRUNED:
        # A pruned trial's Optuna value is its last report (maybe a negated eval_loss): show the loss.
        loss = kept.metrics.get("eval_loss")
        step = "?" if kept.pruned_step is None else kept.pruned_step
        scored = f"at step {step}, eval_loss={format_value(loss)}"
    else:
        values = trial.values or []
        scored = " ".join(f"{m}={format_value(v)}" for m, v in zip(metrics, values, strict=False)) or "-"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    return fit_line(
        f"trial {trial.number:>3} {trial.state.name:<8} {scored}  {format_params(trial.params)}"
        f"  ({seconds:.1f} s)" + "".join(f"  {n}" for n in trial_notes(kept.notes))
    )


def trial_notes(notes: dict, short: bool = False) -> list[str]:
    """What a trial's record notes (TrialRecord.notes) say about it: a reused result, a retry, its
    error. `short` (for tables): the error's first line, cut to 80 characters."""
    said = []
    if DUPLICATE_OF in notes:
        said.append(f"same configuration as trial {notes[DUPLICATE_OF]}, result reused")
    if RETRY_OF in notes:
        said.append(f"retry of trial {notes[RETRY_OF]}")
    if ERROR in notes:
        error = str(notes[ERROR])
        said.append(error.splitlines()[0][:80] if short else f"error: {error}")
    return said


def best_text(study: optuna.Study, metrics: tuple[str, ...]) -> str:
    finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not finished:
        return "best: -"
    if len(metrics) == 1:
        from .selection import choose  # which imports this module: asked here

        best, _ = choose(study, ())  # ties broken as `best` breaks them
        if best is None:
            return "best: -"
        return f"best {metrics[0]}={format_value(best.value)} (trial {best.number})"
    return f"pareto front: {len(study.best_trials)} trials"


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (the test tqdm.autonotebook makes)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def show_as(mode: str, stream: TextIO | None = None) -> str:
    """What --progress `mode` shows here: "widget", "bar", "lines" or "none". In a notebook, a bar
    is tqdm's widget, or plain lines when ipywidgets is missing (tqdm's notebook bar needs it, and
    tqdm.auto would warn); auto elsewhere: a bar when `stream` (stdout) is a terminal, else lines."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {', '.join(PROGRESS_MODES)}, but got progress={mode!r}")
    if mode in ("lines", "none"):
        return mode
    if in_notebook():
        try:
            importlib.import_module("ipywidgets")  # what tqdm's notebook bar draws with
        except ImportError:
            return "lines"
        return "widget"
    if mode == "bar":
        return "bar"
    stream = sys.stdout if stream is None else stream
    return "bar" if stream.isatty() else "lines"


class Progress:
    """An Optuna callback: prints each finished trial's line, and shows the running trial as the
    mode says (the module's docstring). `clock` (seconds) times the heartbeat."""

    def __init__(
        self,
        metrics: tuple[str, ...],
        budget: int,
        done: int,
        mode: str = "auto",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics, self.clock = metrics, clock
        self.mode = show_as(mode)
        self.best = ""  # the study's best so far, kept beside the running trial's progress
        self.bar: Any = None  # tqdm's console bar or its notebook widget
        if self.mode == "bar":
            self.bar = tqdm(
                total=budget,
                initial=done,
                desc="sweep",
                unit="trial",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=False,
            )
        elif self.mode == "widget":
            from tqdm.notebook import tqdm as widget

            # Left in place when the sweep ends: the notebook keeps what the cell did.
            self.bar = widget(total=budget, initial=done, desc="sweep", unit="trial")
        # Trials in one process run one after another: the running one started when the last ended.
        self.free_since = self.last_line = clock()
        self.running: tuple[int, float] | None = None  # lines mode: (trial number, when it started)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.mode == "none":
            return
        self.note(trial_line(trial, self.metrics))
        self.free_since = self.clock()
        if self.bar is None:
            return
        # The budget counts finished trials (failed ones are replaced), the study's: with several
        # workers, others finish trials too.
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        self.bar.n = len(study.get_trials(deepcopy=False, states=finished))
        self.best = best_text(study, self.metrics)
        self.bar.set_postfix_str(self.best)

    def trial_step(self, number: int, step: int, max_steps: int | None, loss: float | None) -> None:
        """The running trial's own progress beside the study's, so a long trial is not a silent one:
        on the bar, or (lines) as a heartbeat line at most every HEARTBEAT_S seconds."""
        of = f"/{max_steps}" if max_steps and max_steps > 0 else ""
        latest = f", loss {format_value(loss)}" if loss is not None else ""
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"trial {number}: step {step}{of}{latest}" + (f"; {self.best}" if self.best else "")
            )
        elif self.mode == "lines":
            now = self.clock()
            if self.running is None or self.running[0] != number:
                self.running = (number, self.free_since)
            if now - self.last_line >= HEARTBEAT_S:
                self.note(f"trial {number} running: step {step}{of}{latest}, {now - self.running[1]:.0f} s")

    def note(self, text: str) -> None:
        """A line of its own (above the bar; nothing with mode none)."""
        if self.mode == "none":
            return
        line = fit_line(text)
        if self.mode == "bar":
            self.bar.write(line, file=sys.stdout)
        else:  # a plain line; the widget is an output of its own
            print(line, flush=True)
        self.last_line = self.clock()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
