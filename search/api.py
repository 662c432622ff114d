"""lorasweep from Python: the CLI's operations, with its defaults, raising its errors.

    import lorasweep

    study = lorasweep.run("spaces/demo.yaml", trials=4)
    table = lorasweep.trials("demo")          # a pandas DataFrame, one row per trial
    chosen = lorasweep.best("demo")           # what `lorasweep best` names, and its adapter's URI
    done = lorasweep.promote("demo")          # registry, ONNX exports, parity gate, champion alias
    page = lorasweep.report("demo")           # the plots as one HTML page: its path

Each function is its command: the same storage and tracking defaults ($LORASWEEP_STORAGE, then
mlruns/optuna.journal; $MLFLOW_TRACKING_URI, then the study's own), the same checks, and the same
messages, raised as exceptions instead of printed: `UserError` (bad input; the CLI's exit 2),
`SweepStopped` (too many failed trials; exit 1), `ExportFailed` (an exporter failed; exit 1). Nothing
here calls sys.exit.

Metrics of your own: `run(..., metrics={"name": fn})` scores each trial's generations with
fn(outputs, references) -> float beside ROUGE and F1; the name may be the study's objective. A
module-level function goes to worker processes (and to `resume`) by its import path; a lambda, a
closure or a function of __main__ (a notebook cell) runs in this process only. A sweep file names
them too: `eval: {metrics: {name: "module:function"}}`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .choices import DEFAULT_MAX_FAILURES
from .errors import UserError
from .threads import wait_passively
from .urls import STORAGE_ENV

if TYPE_CHECKING:
    import optuna
    import pandas

    from lorasweep.objectives import MetricFn

    from .handover import Parity, Promotion
    from .sweepfile import Sweep

    StudyRef = str | optuna.Study | None  # a study's name (None: the storage's only one), or the study

SweepSource = str | os.PathLike | Mapping[str, Any]  # a sweep file's path, or its content as a dict


def run(
    sweep: SweepSource,
    *,
    trials: int | None = None,
    study: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    workers: int | str = "auto",
    quiet: bool = False,
    progress: str = "auto",
    max_failures: int = DEFAULT_MAX_FAILURES,
    metrics: Mapping[str, MetricFn] | None = None,
    system_metrics: bool = True,
    force: bool = False,
) -> optuna.Study:
    """`lorasweep run`: create or continue the study and run trials until it holds its budget.

    `sweep` is a sweep file's path or the same content as a dict (relative data paths then start at
    the current folder). Returns the Optuna study; raises SweepStopped if no trial finished or too
    many failed. `metrics` adds metrics of your own (see the module's docstring): with workers above 1
    only functions that another process can import (defined in a module). `workers="auto"` chooses
    for this machine and the base (see docs/parallel.md); a number beyond what this machine's cores
    and memory fit is refused (UserError, naming the most that fit) unless `force`.

    While it runs, a line per finished trial and a bar (`progress`: auto is tqdm's widget in a
    notebook, a bar on a terminal, plain lines in a log; or "bar", "lines", "none", as `--progress`);
    `quiet` prints nothing but errors. The libraries' bars, warnings and logs are off either way,
    for the call only."""
    wait_passively(log=_log(quiet))  # before anything imports torch: see threads.py
    from .sweepfile import load_sweep

    custom = tuple(metrics or ())
    if isinstance(sweep, Mapping):
        import yaml

        loaded = load_sweep(Path("sweep"), yaml.safe_dump(dict(sweep), sort_keys=False), custom)
    else:
        loaded = load_sweep(Path(sweep), custom_metrics=custom)
    return _sweep(
        loaded,
        study=study,
        trials=trials,
        storage=storage,
        tracking_uri=tracking_uri,
        workers=workers,
        quiet=quiet,
        progress=progress,
        max_failures=max_failures,
        metrics=metrics,
        system_metrics=system_metrics,
        force=force,
    )


def resume(
    study: StudyRef,
    *,
    trials: int | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    workers: int | str = "auto",
    quiet: bool = False,
    progress: str = "auto",
    max_failures: int = DEFAULT_MAX_FAILURES,
    metrics: Mapping[str, MetricFn] | None = None,
    system_metrics: bool = True,
    force: bool = False,
) -> optuna.Study:
    """`lorasweep resume`: continue a study with the sweep file, budget and MLflow store stored in
    it. A custom metric recorded by its import path (named in the sweep file, or a module-level
    function given to `run`) is imported again; one that only the first run's process had (a lambda,
    a notebook cell's function) needs `metrics` again."""
    wait_passively(log=_log(quiet))  # before anything imports torch: see threads.py
    from .record import StudyRecord, study_tracking_uri
    from .storage import DEFAULT_STORAGE
    from .sweepfile import stored_sweep

    storage = _storage(storage)
    found = _load(study, storage)
    kept = StudyRecord.of(found)
    sweep = stored_sweep(found)
    custom = tuple(dict.fromkeys([*kept.custom_metrics, *(metrics or ())]))
    sweep = dataclasses.replace(sweep, custom_metrics=custom)
    study_tracking_uri(found, tracking_uri)  # a stored URI whose password was masked needs the flag
    return _sweep(
        sweep,
        study=found.study_name,
        trials=trials if trials is not None else kept.budget,
        storage=storage or str(DEFAULT_STORAGE),  # where the study was found, whatever its file says
        # The flag alone: the stored URI comes with the stored sweep, and is stored again as it was
        # (the default store relative, so that a moved project folder uses the store it holds).
        tracking_uri=tracking_uri,
        workers=workers,
        quiet=quiet,
        progress=progress,
        max_failures=max_failures,
        metrics=metrics,
        system_metrics=system_metrics,
        force=force,
    )


def _sweep(
    sweep: Sweep,
    *,
    study: str | None,
    trials: int | None,
    storage: str | None,
    tracking_uri: str | None,
    workers: int | str,
    quiet: bool,
    progress: str,
    max_failures: int,
    metrics: Mapping[str, MetricFn] | None,
    system_metrics: bool,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> optuna.Study:
    from .failures import require_a_complete_trial
    from .launch import RunOptions, run_sweep

    options = RunOptions(
        n_trials=trials,
        study_name=study,
        storage=_storage(storage),
        tracking_uri=tracking_uri,
        quiet=quiet,
        progress=progress,
        max_failures=max_failures,
        workers=workers,
        metrics=dict(metrics or {}),
        system_metrics=system_metrics,
        force=force,
    )
    with _hushed(trial_side=True):
        done = run_sweep(sweep, options, log=log)
    require_a_complete_trial(done)
    return done


@contextlib.contextmanager
def _hushed(trial_side: bool = False) -> Iterator[None]:
    """The libraries' own chatter off for one call, as the CLI keeps it, and the caller's settings
    back afterwards (a notebook is the caller's process): Optuna's per-trial INFO lines, which repeat
    lorasweep's and are colored; MLflow's download bars and notes; library warnings (FutureWarning
    and the like: lorasweep's own messages never go through warnings); and with `trial_side`,
    transformers' and datasets' bars and logs. Errors are raised as before."""
    import optuna

    from lorasweep.objectives import libraries_quieted

    verbosity = optuna.logging.get_verbosity()
    levels = {name: logging.getLogger(name).level for name in ("mlflow", "alembic")}
    bars = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    # What Optuna still says (errors) without color codes, which a notebook shows raw.
    handlers = list(logging.getLogger("optuna").handlers)  # a copy: the call may add or remove one
    formats = [handler.formatter for handler in handlers]
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.ERROR))  # never louder than it was
    for name in levels:
        logging.getLogger(name).setLevel(max(levels[name], logging.ERROR))
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    for handler in handlers:
        handler.setFormatter(logging.Formatter("[%(levelname)1.1s %(asctime)s] %(message)s"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # first: transformers warns as it loads, in a notebook
            with libraries_quieted() if trial_side else contextlib.nullcontext():
                yield
    finally:
        optuna.logging.set_verbosity(verbosity)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if bars is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bars
        for handler, format_ in zip(handlers, formats, strict=True):
            handler.setFormatter(format_)


def trials(
    study: StudyRef = None, *, storage: str | None = None, sort: str | None = None, state: str | None = None
) -> pandas.DataFrame:
    """`lorasweep trials` as a DataFrame indexed by trial number: state, the objective's values,
    param.NAME per parameter, the other metrics, duration_s, mlflow_run_id and note (the columns of
    `lorasweep trials --csv`)."""
    import pandas

    from ._tables import flat, trial_rows
    from .progress import objective_names

    found = _load(study, storage)
    header, table = flat(trial_rows(found, sort=sort, state=state), objective_names(found))
    return pandas.DataFrame(table, columns=header).set_index("number")


@dataclass(frozen=True)
class Best:
    """What `lorasweep best` names: the trial promote hands over, and how it was chosen."""

    number: int
    params: dict[str, Any]
    metrics: dict[str, float]
    run_id: str | None
    adapter_uri: str | None  # runs:/RUN/adapter: mlflow.artifacts.download_artifacts takes it
    rule: str  # "best f1", or the promote.select rule, and how a tie was broken if there was one
    candidates: tuple[int, ...]  # the Pareto front (one trial with one objective)
    # The line saying that it does not beat the base model on the objective; None when it does, or
    # when the study kept no base scores.
    no_gain: str | None = None


def best(study: StudyRef = None, *, storage: str | None = None) -> Best:
    """`lorasweep best`: the best finished trial, or with several objectives the trial the sweep
    file's promote.select picks from the Pareto front."""
    from .progress import objective_names
    from .record import StudyRecord, TrialRecord
    from .selection import choose, describe, no_gain, pick, tie_note
    from .sweepfile import promote_spec

    found = _load(study, storage)
    sweep_text = StudyRecord.of(found).sweep_text
    rule = promote_spec(sweep_text).select if sweep_text is not None else ()
    chosen = pick(found, rule)  # a reused result stands for its original, whose run has the adapter
    objective = list(objective_names(found))
    kept = TrialRecord.of(chosen)
    tie = tie_note(found, rule, chosen)
    gain = no_gain(found, chosen)
    return Best(
        number=chosen.number,
        params=dict(chosen.params),
        metrics=kept.metrics,
        run_id=kept.run_id,
        adapter_uri=f"runs:/{kept.run_id}/adapter" if kept.run_id else None,
        rule=(describe(rule, objective) if len(objective) > 1 else f"best {objective[0]}")
        + (f"; {tie}" if tie else ""),
        candidates=tuple(t.number for t in choose(found, rule)[1]),
        no_gain=gain.line() if gain is not None else None,
    )


def compare(
    numbers: Sequence[int],
    *,
    study: StudyRef = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """`lorasweep compare`, as the text it prints: parameters, metrics, curves and generations."""
    from . import tracking
    from ._tables import compare as side_by_side
    from .record import study_tracking_uri

    found = _load(study, storage)
    with _hushed():
        client = tracking.client(study_tracking_uri(found, tracking_uri))
        return side_by_side(found, list(numbers), client)


def report(
    study: StudyRef = None, *, out: str | os.PathLike | None = None, storage: str | None = None
) -> Path:
    """`lorasweep report`: the study's plots (optimization history, importances, parallel
    coordinates, slices, learning curves) as one self-contained HTML page and a PNG each, in `out`
    (default reports/STUDY). A plot the study cannot have yet is left out, and the page says why.
    Returns the HTML page's path; in a notebook, `IPython.display.IFrame(path, width="100%",
    height=600)` shows it."""
    from .report import make_report

    found = _load(study, storage)
    folder = Path(out) if out is not None else Path("reports") / found.study_name
    with _hushed():
        return make_report(found, folder).page


def promote(
    study: StudyRef = None,
    *,
    trial: int | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    out: str | os.PathLike | None = None,
    quiet: bool = False,
    force: bool = False,
    allow_no_gain: bool = False,
) -> Promotion:
    """`lorasweep promote`: register the trial (default: best's) with its ONNX exports, and move the
    champion alias if every parity check passed. A failed gate is not an exception: the version is
    registered with its evidence and `.parity.passed` is False, the alias unmoved. A champion that
    another study promoted under the same name is moved only with `force`. A trial that does not
    beat the base model on the objective raises UserError unless `allow_no_gain` (or `force`)."""
    from .handover import promote as hand_over

    found = _load(study, storage)
    with _hushed(trial_side=True):
        return hand_over(
            found,
            trial,
            tracking_uri,
            Path(out) if out else None,
            log=_log(quiet),
            force=force,
            allow_no_gain=allow_no_gain,
        )


def export(
    out: str | os.PathLike,
    *,
    study: StudyRef = None,
    trial: int | None = None,
    precisions: Sequence[str] = ("fp32",),
    storage: str | None = None,
    tracking_uri: str | None = None,
    quiet: bool = False,
) -> Parity:
    """`lorasweep export`: the trial's ONNX exports and their parity report in `out` (a new or empty
    folder), without the registry. `.passed` says whether every check passed."""
    from .handover import export as write_exports

    found = _load(study, storage)
    # One trial without adapters: never an adapter bundle, so its report is a Parity (export's overloads).
    with _hushed(trial_side=True):
        _, parity = write_exports(found, Path(out), trial, tuple(precisions), tracking_uri, log=_log(quiet))
    return parity


def studies(storage: str | None = None) -> pandas.DataFrame:
    """`lorasweep studies` as a DataFrame: name, finished, budget, best, parent_run, last_activity."""
    import pandas

    from .catalog import StudyRow, list_studies

    columns = [f.name for f in dataclasses.fields(StudyRow)]
    rows = [dataclasses.astuple(r) for r in list_studies(_storage(storage))]
    return pandas.DataFrame(rows, columns=columns)


def delete(
    study: StudyRef,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    force: bool = False,
    alias: Literal["keep", "drop"] = "keep",
) -> int:
    """`lorasweep delete STUDY --yes`: remove the study from its storage and delete its MLflow runs
    (restorable until `mlflow gc`). Returns the number of runs deleted. A study with a live trial is
    refused unless `force` (its sweep then stops). A registered model's alias on a version from one
    of its runs is kept (it still loads) or dropped (`alias="drop"`), and a line says which."""
    from .catalog import delete_study

    if alias not in ("keep", "drop"):  # a plain string from Python: "dorp" must not mean keep
        raise UserError(f"alias must be 'keep' or 'drop', but got alias={alias!r}. Pass one of them.")
    return delete_study(
        _load(study, storage), _storage(storage), tracking_uri, force=force, aliases=alias, say=print
    )


def _load(study: StudyRef, storage: str | None) -> optuna.Study:
    """A study given by name (None: the storage's only study), or the Study object itself."""
    if study is not None and not isinstance(study, str):
        return study
    from .storage import load_study

    return load_study(study, _storage(storage))


def _storage(given: str | None) -> str | None:
    """As the CLI: the argument, then $LORASWEEP_STORAGE, then (None) the local journal."""
    return given or os.environ.get(STORAGE_ENV) or None


def _log(quiet: bool) -> Callable[[str], None]:
    return (lambda _line: None) if quiet else print
