"""`lorasweep`: run, resume and validate sweeps; list, compare, plot and browse their trials.

Bad input exits with code 2 and one readable message per problem; a traceback only with --debug.
A sweep that stops on failures exits 1 with a summary, as does an export that fails or fails its
parity gate; an interrupted command (Ctrl-C, SIGTERM) exits 130; one whose reader closed the pipe, 141.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from lorasweep import __version__  # pyproject's version, as the installed package carries it
from lorasweep.objectives import InputError, quiet_libraries

from .choices import DEFAULT_MAX_FAILURES, PROGRESS_MODES, STATES
from .errors import ExportFailed, StoreError, SweepError, SweepStopped, UserError
from .precisions import PRECISIONS, REGISTRY
from .urls import STORAGE_ENV, redact, sqlite_path, tracking_uri

if TYPE_CHECKING:
    from .sweepfile import Sweep

# Each command imports what it needs when it runs (Optuna, MLflow, torch...): `lorasweep --help`
# and `lorasweep trials` must not wait for the libraries a sweep needs.

EXIT_USER_ERROR = 2

# Each command's one-line help, the paragraph its --help shows, and an example; in the order a user
# meets them, which is the order `lorasweep --help` lists them in.
_ABOUT = {
    "run": (
        "run (or continue) a sweep",
        "Create the study the sweep file names, or continue it, and run trials until it holds its budget of "
        "finished trials. The file is checked whole first, then the data and the base model, before anything"
        " is written; each trial gets an MLflow run under the study's parent run.",
        "lorasweep run spaces/demo.yaml --trials 8",
    ),
    "trials": (
        "list the trials of a study",
        "One line per trial: its state, the objective, its parameters, the other metrics, its time and a "
        "note (pruned, reused, retried, its error). --json and --csv print the same rows for scripts.",
        "lorasweep trials --sort f1 --state complete",
    ),
    "compare": (
        "show trials side by side",
        "Parameters (differences marked), metrics (the best marked), eval-loss curves as sparklines on one "
        "scale, and each trial's generations on the first eval prompts.",
        "lorasweep compare 3 7",
    ),
    "best": (
        "the best trial, or the Pareto front and the trial the rule picks",
        "With one objective, the best finished trial; with several, the Pareto front and the trial "
        "promote.select picks from it. The trial named is the one promote hands over.",
        "lorasweep best --json",
    ),
    "promote": (
        "register the best trial, export it to ONNX, check parity, then move the champion alias",
        "Register the chosen trial in the MLflow Model Registry with its ONNX exports (fp32 by Model "
        "Builder, int8 and int4 by Olive), each checked against PyTorch on the eval data; the champion alias"
        " moves only if every check passed. --top K (or --trial repeated) registers several trials as one"
        " version: an adapter bundle whose pyfunc takes an `adapter` param.",
        "lorasweep promote --study demo",
    ),
    "export": (
        "export a trial to ONNX and check it against PyTorch, without the registry",
        "The same exports and parity checks as promote, into a folder of yours, with parity.json; nothing is"
        " registered. --top K (or --trial repeated, or --adapters) writes an adapter bundle instead: one ONNX"
        " base with LoRA inputs and an .onnx_adapter per trial, each adapter gated through it (lorasweep "
        "export --top 3 --out exports/top3).",
        "lorasweep export --trial 3 --out exports/t3 --precision int8",
    ),
    "report": (
        "write the study's plots as an HTML report and PNGs",
        "Optimization history, parameter importances, parallel coordinates, slices and learning curves (the "
        "Pareto front with several metrics), as one self-contained HTML page and a PNG each.",
        "lorasweep report --out reports/demo",
    ),
    "ui": (
        "serve the MLflow UI (and optuna-dashboard)",
        "The MLflow UI on the sweep's tracking store, on 127.0.0.1 unless --host says otherwise; --dashboard"
        " adds optuna-dashboard on the study storage. Ctrl-C stops both.",
        "lorasweep ui --dashboard",
    ),
    "validate": (
        "check a sweep file and show what would run",
        "Check the whole file (every problem at once, with its line) and the data, and print what would run:"
        " the study, model, data, fixed settings and the search space with its size.",
        "lorasweep validate spaces/demo.yaml",
    ),
    "schema": (
        "print the sweep file's JSON Schema",
        "The JSON Schema of the sweep file, with each key's description, choices and default: point an "
        "editor's YAML language server at it (a `# yaml-language-server: $schema=...` line) to complete "
        "and check sweep files as you type.",
        "lorasweep schema > sweep.schema.json",
    ),
    "studies": (
        "list the studies in a storage",
        "Each study of the storage: its trials finished against its budget, its best value, the state of "
        "its MLflow parent run and when a trial last started or ended.",
        "lorasweep studies --storage postgresql://USER@DBHOST/optuna",
    ),
    "delete": (
        "remove a study and its MLflow runs",
        "Remove the study from the Optuna storage and delete its MLflow runs (its parent run and every "
        "trial's) as MLflow deletes: restorable until mlflow gc. Asks first, unless --yes.",
        "lorasweep delete old-demo --yes",
    ),
    "resume": (
        "continue a study with the sweep file stored in it",
        "Continue a study by its name alone, with the sweep file, budget and MLflow store it was started "
        "with: the file on disk may have changed or gone since.",
        "lorasweep resume demo --trials 12",
    ),
    "worker": (
        "run trials of a study that `run` started (one process: start one per machine or GPU)",
        "Join a study that lorasweep run started, from this process, on this machine or another, until the "
        "study holds its budget; several workers share it through its storage.",
        "LORASWEEP_STORAGE=postgresql://USER@DBHOST/optuna lorasweep worker --study demo",
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "storage", "") is None:  # no --storage: $LORASWEEP_STORAGE, then the default
        args.storage = os.environ.get(STORAGE_ENV) or None
    _quiet_libraries(args.debug)
    # SIGTERM (a scheduler, `kill`) ends a command like Ctrl-C: a sweep closes the running trial's
    # MLflow run KILLED and queues the trial to run again on resume; `ui` stops its servers. The
    # caller's handler comes back afterwards: main() also runs inside other programs (and tests).
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _exit_code(args)
    finally:
        if previous is not None:  # None: a handler set outside Python, which Python cannot put back
            signal.signal(signal.SIGTERM, previous)


def _exit_code(args: argparse.Namespace) -> int:
    """Run the command; turn what it raises into a message and the exit code the module's docstring
    names (with --debug, the traceback instead)."""
    try:
        return int(args.command(args))
    except (UserError, InputError) as e:
        if args.debug:
            raise
        # A list of a file's problems goes under a heading; a file that cannot be read at all (not
        # there, a folder, a FIFO) is one line.
        listed = isinstance(e, SweepError) and (len(e.problems) > 1 or e.problems[0].line is not None)
        print(f"error: the sweep cannot run:\n{e}" if listed else f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except StoreError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (SweepStopped, ExportFailed) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        if args.command in (_run, _resume, _worker):
            print(
                "interrupted: finished trials are kept; run the same command again (or lorasweep "
                "resume STUDY) to continue.",
                file=sys.stderr,
            )
        return 130
    except BrokenPipeError:
        # The reader went away (`lorasweep schema | head`): what it wanted it has; the rest of the
        # output goes nowhere, so the exit flush cannot raise again. 141 is a shell's code for SIGPIPE.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


# -- the command line ----------------------------------------------------------------------------
# One builder per command, in `_ABOUT`'s order; each adds the command's flags and the function that
# runs it. The flags' choices and defaults come from choices.py and precisions.py, which import
# nothing, so `lorasweep --help` loads no library.
NewCommand = Callable[[str], argparse.ArgumentParser]  # a command's name -> its empty parser

STORAGE_HELP = "Optuna storage URL (default: $LORASWEEP_STORAGE, then mlruns/optuna.journal)"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command and flag (the CLI reference in docs/ is generated from it)."""
    parser = argparse.ArgumentParser(
        prog="lorasweep",
        parents=[_output_flags(False)],
        description="Find the best LoRA fine-tune of a small language model.",
    )
    parser.add_argument(
        "--version", action="version", version=f"lorasweep {__version__}", help="print the version and exit"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    common = _output_flags(argparse.SUPPRESS)

    def new_command(name: str) -> argparse.ArgumentParser:
        """A subcommand with its one-line help, a paragraph that explains it and an example."""
        summary, about, example = _ABOUT[name]
        return commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=textwrap.fill(about, 90),
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    for add in _BUILDERS:
        add(new_command)
    return parser


def _output_flags(default: bool | str) -> argparse.ArgumentParser:
    """-q and --debug, which work before or after the command. The subcommands' copies default to
    SUPPRESS, so a flag given before the command is not reset by the subcommand's own default. (One
    parent per use, not one shared: argparse's `parents=` share action objects, and so one default.)"""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="print only errors and the result"
    )
    flags.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks and library logs"
    )
    return flags


def _add_run(new_command: NewCommand) -> None:
    run = new_command("run")
    run.add_argument("sweep_file", help="the sweep file (YAML; lorasweep schema prints its JSON Schema)")
    run.add_argument("--study", help="study name (default: study.name or the file's stem)")
    _run_flags(
        run,
        "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then tracking.uri in the file, "
        "then sqlite:///mlruns/mlflow.db)",
    )
    run.set_defaults(command=_run)


def _add_trials(new_command: NewCommand) -> None:
    trials = new_command("trials")
    _study_flags(trials)
    trials.add_argument("--sort", metavar="METRIC", help="best first by a metric (or number, duration)")
    trials.add_argument("--state", choices=list(STATES), help="only trials in this state")
    output = trials.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list")
    output.add_argument("--csv", action="store_true", help="print CSV, one row per trial")
    trials.set_defaults(command=_trials)


def _add_compare(new_command: NewCommand) -> None:
    compare = new_command("compare")
    compare.add_argument("numbers", metavar="TRIAL", type=int, nargs="+", help="trial numbers")
    _study_flags(compare, tracking=True)
    compare.set_defaults(command=_compare)


def _add_best(new_command: NewCommand) -> None:
    best = new_command("best")
    _study_flags(best)
    best.add_argument("--json", action="store_true", help="print JSON")
    best.set_defaults(command=_best)


def _add_promote(new_command: NewCommand) -> None:
    promote = new_command("promote")
    _study_flags(promote, tracking=True)
    _trial_flags(promote, "promote")
    promote.add_argument(
        "--out", type=Path, metavar="DIR", help="where the ONNX exports go (default: exports/MODEL/vVERSION)"
    )
    promote.add_argument(
        "--force",
        action="store_true",
        help="promote past every refusal: move the champion when another study promoted it (same "
        "promote.model_name), promote a trial that does not beat the base model",
    )
    promote.add_argument(
        "--allow-no-gain",
        action="store_true",
        help="promote a trial that does not beat the base model on the objective, and only that "
        "(refused by default; --force passes it with the other refusals)",
    )
    promote.set_defaults(command=_promote)


def _add_export(new_command: NewCommand) -> None:
    export = new_command("export")
    _study_flags(export, tracking=True)
    _trial_flags(export, "export")
    export.add_argument(
        "--adapters",
        action="store_true",
        help="write one ONNX base with LoRA inputs and an .onnx_adapter per trial "
        "(implied by several trials)",
    )
    export.add_argument("--out", type=Path, metavar="DIR", required=True, help="a new or empty folder")
    export.add_argument(
        "--precision",
        action="append",
        choices=PRECISIONS,
        help="; ".join(f"{p.name}: {p.summary}" for p in REGISTRY.values()) + ". Repeat for several",
    )
    export.set_defaults(command=_export)


def _add_report(new_command: NewCommand) -> None:
    report = new_command("report")
    _study_flags(report)
    report.add_argument("--out", help="folder to write to (default: reports/STUDY)")
    report.set_defaults(command=_report)


def _add_ui(new_command: NewCommand) -> None:
    ui = new_command("ui")
    ui.add_argument("--port", type=int, default=5000, help="MLflow UI port (default 5000)")
    ui.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    ui.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, then the study's own, then sqlite:///mlruns/mlflow.db)",
    )
    ui.add_argument("--dashboard", action="store_true", help="also serve optuna-dashboard on PORT+1")
    ui.add_argument(
        "--storage",
        help="Optuna storage for the dashboard (default: $LORASWEEP_STORAGE, then mlruns/optuna.journal)",
    )
    ui.add_argument(
        "--allowed-hosts",
        metavar="HOSTS",
        help="Host headers the MLflow UI answers, comma-separated (MLflow's own flag; default: localhost "
        "and private addresses)",
    )
    ui.add_argument(
        "--cors-allowed-origins",
        metavar="ORIGINS",
        help="web origins whose pages may call the MLflow UI, comma-separated (MLflow's own flag)",
    )
    ui.set_defaults(command=_ui)


def _add_validate(new_command: NewCommand) -> None:
    validate = new_command("validate")
    validate.add_argument("sweep_file", help="the sweep file to check")
    validate.set_defaults(command=_validate)


def _add_schema(new_command: NewCommand) -> None:
    new_command("schema").set_defaults(command=_schema)


def _add_studies(new_command: NewCommand) -> None:
    studies = new_command("studies")
    studies.add_argument("--storage", help=STORAGE_HELP)
    studies.add_argument("--json", action="store_true", help="print a JSON list")
    studies.set_defaults(command=_studies)


def _add_delete(new_command: NewCommand) -> None:
    delete = new_command("delete")
    delete.add_argument("study", metavar="STUDY", help="the study's name")
    delete.add_argument("--storage", help=STORAGE_HELP)
    delete.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then the study's own)"
    )
    delete.add_argument("--yes", action="store_true", help="delete without asking")
    delete.add_argument(
        "--force",
        action="store_true",
        help="delete even while a trial of the study runs (its sweep stops, its runs closed)",
    )
    alias = delete.add_mutually_exclusive_group()
    alias.add_argument(
        "--keep-alias",
        dest="aliases",
        action="store_const",
        const="keep",
        help="keep a registered model's alias (champion) on a version from the study's runs: it still "
        "loads, its run deleted (the default without a terminal to ask on)",
    )
    alias.add_argument(
        "--drop-alias",
        dest="aliases",
        action="store_const",
        const="drop",
        help="drop such an alias; the version itself remains in the registry",
    )
    delete.set_defaults(command=_delete)


def _add_resume(new_command: NewCommand) -> None:
    resume = new_command("resume")
    resume.add_argument("study", metavar="STUDY", help="the study's name")
    _run_flags(resume, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then the study's own)")
    resume.set_defaults(command=_resume)


def _add_worker(new_command: NewCommand) -> None:
    worker = new_command("worker")
    _study_flags(worker, tracking=True)
    _max_failures_flag(worker)
    _system_metrics_flag(worker)
    _progress_flag(worker)
    worker.set_defaults(command=_worker)


# Flags several commands share.
def _study_flags(command: argparse.ArgumentParser, tracking: bool = False) -> None:
    command.add_argument("--study", help="study name (default: the only study in the storage)")
    command.add_argument("--storage", help=STORAGE_HELP)
    if tracking:
        command.add_argument(
            "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then the study's own)"
        )


def _trial_flags(command: argparse.ArgumentParser, verb: str) -> None:
    """Which trials promote or export hand over: one, several by number, or the K best."""
    command.add_argument(
        "--trial",
        type=int,
        action="append",
        metavar="N",
        help=f"the trial to {verb} (default: lorasweep best's); repeat for an adapter bundle of several",
    )
    command.add_argument(
        "--top", type=int, metavar="K", help=f"{verb} the K best trials as one adapter bundle"
    )


def _run_flags(command: argparse.ArgumentParser, tracking_help: str) -> None:
    command.add_argument("--trials", type=int, help="trial budget: finished trials the study ends with")
    command.add_argument("--storage", help=STORAGE_HELP)
    command.add_argument("--tracking-uri", help=tracking_help)
    _max_failures_flag(command)
    command.add_argument(
        "--workers",
        type=_workers_flag,
        default="auto",
        metavar="N",
        help="worker processes on this machine, sharing its cores (or one GPU each); auto: the "
        "split of cores into processes and threads that suits the base, within memory (default auto)",
    )
    command.add_argument(
        "--force",
        action="store_true",
        help="start --workers N even beyond what this machine's cores and memory fit",
    )
    _system_metrics_flag(command)
    _progress_flag(command)


def _workers_flag(value: str) -> int | str:
    """--workers N or auto (RunOptions checks N)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or auto, but got {value!r}") from None


def _system_metrics_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--no-system-metrics",
        dest="system_metrics",
        action="store_false",
        help="don't sample CPU, memory and GPU use onto each trial's MLflow run",
    )


def _progress_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="how trials show while they run: bar (a bar with the running trial's step), lines (a "
        "plain line per finished trial and a heartbeat every 30 s for a running one: for a log "
        "file), none (only the result and errors, as -q); auto: bar on a terminal, lines otherwise "
        "(default auto)",
    )


def _max_failures_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--max-failures",
        type=int,
        default=DEFAULT_MAX_FAILURES,
        metavar="N",
        help=f"stop after N failed trials in this run (default {DEFAULT_MAX_FAILURES})",
    )


_BUILDERS: tuple[Callable[[NewCommand], None], ...] = (
    _add_run,
    _add_trials,
    _add_compare,
    _add_best,
    _add_promote,
    _add_export,
    _add_report,
    _add_ui,
    _add_validate,
    _add_schema,
    _add_studies,
    _add_delete,
    _add_resume,
    _add_worker,
)


# -- the commands --------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    _say(args)(f"checking {args.sweep_file}, then its data and base model")  # within a second, not 30
    from .api import run
    from .parent import plots_after

    with plots_after():  # the result line first, then the few seconds of plots
        _print_result(run(args.sweep_file, study=args.study, **_run_options(args)))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from .api import resume
    from .parent import plots_after

    with plots_after():
        _print_result(resume(args.study, **_run_options(args)))
    return 0


def _run_options(args: argparse.Namespace) -> dict:
    return {
        "trials": args.trials,
        "storage": args.storage,
        "tracking_uri": args.tracking_uri,
        "workers": args.workers,
        "force": args.force,
        "quiet": args.quiet or args.progress == "none",
        "progress": args.progress,
        "max_failures": args.max_failures,
        "system_metrics": args.system_metrics,
    }


def _worker(args: argparse.Namespace) -> int:
    from ._workers import die_with_pool
    from .failures import require_a_complete_trial
    from .launch import RunOptions, join_sweep
    from .storage import load_study
    from .threads import wait_passively

    die_with_pool()  # first: a pool killed from here on takes this worker with it
    wait_passively()  # before torch loads (run and resume: the API's run and resume do it)
    options = RunOptions(  # checks the flags before the storage is opened
        tracking_uri=args.tracking_uri,
        quiet=args.quiet or args.progress == "none",
        progress=args.progress,
        max_failures=args.max_failures,
        system_metrics=args.system_metrics,
    )
    study = join_sweep(load_study(args.study, args.storage), args.storage, options)
    require_a_complete_trial(study)
    _print_result(study)
    return 0


def _print_result(study) -> None:
    """The best trial (or the Pareto front) beside the base model."""
    from .progress import fit_line, format_params, objective_names
    from .record import StudyRecord, TrialRecord
    from .selection import choose, no_gain
    from .sweepfile import promote_spec

    record = StudyRecord.of(study)
    base = record.base_metrics or {}
    metrics = objective_names(study)
    rule = promote_spec(record.sweep_text).select if record.sweep_text is not None else ()
    chosen, front = choose(study, rule)  # ties broken by eval loss, then trial number
    best = front if len(metrics) > 1 else [chosen] if chosen is not None else []
    for trial in best:
        label = "best" if len(metrics) == 1 else "pareto"
        kept = TrialRecord.of(trial)
        scores = " ".join(
            f"{m}={kept.metrics.get(m, float('nan')):.4g}" + (f" (base {base[m]:.4g})" if m in base else "")
            for m in metrics
        )
        print(
            fit_line(
                f"{label}: trial {trial.number} {scores}  {format_params(trial.params)}  "
                f"mlflow run {kept.run_id or '-'}"
            )
        )
    gain = no_gain(study, chosen) if chosen is not None else None
    if gain is not None:
        print(gain.line())


def _validate(args: argparse.Namespace) -> int:
    from ._machine import budget_notes
    from .sweepfile import load_sweep

    sweep = load_sweep(args.sweep_file)
    data_note = _check_data(sweep)
    s = sweep.study
    size = sweep.space.size()
    lines = [
        f"{args.sweep_file}: OK",
        f"study      {s.name}: "
        + ", ".join(f"{m} ({d})" for m, d in zip(s.metrics, s.directions, strict=True)),
        f"sampler    {s.sampler} (seed {s.seed}"
        + "".join(f", {k}={v!r}" for k, v in s.sampler_options.items())
        + f"), {s.n_trials} trials"
        + (f", timeout {s.timeout:g} s" if s.timeout else ""),
        f"pruner     {_pruner_text(s.pruner)}; retries {s.retries}",
        f"storage    {redact(s.storage) if s.storage else 'mlruns/optuna.journal'}",
        f"tracking   {redact(tracking_uri(None, sweep.tracking_uri))}",
        f"model      {_fields(sweep.model)}",
        f"data       {_fields(sweep.data)}",
        f"           {data_note}",
        *_template_note(sweep),
        f"eval       {_fields(sweep.eval)}",
        "fixed      "
        + " ".join(f"{k}={v}" for k, v in sweep.fixed.items() if k not in sweep.space.searched()),
        "search space (" + (f"{size} configurations" if size is not None else "continuous") + "):",
    ]
    lines += [
        f"  {name}: {_describe(dist)}  {sweep.space.condition_text(name)}".rstrip()
        for name, dist in sweep.space.distributions.items()
    ]
    if sweep.space.alpha_per_rank is not None:
        lines.append(f"  lora_alpha: {sweep.space.alpha_per_rank:g} x r")
    max_steps = sweep.space.largest("max_steps") or sweep.fixed.get("max_steps")
    lines += [f"note: {n}" for n in budget_notes(max_steps, s.n_trials, s.timeout)]
    print("\n".join(lines))
    return 0


def _schema(args: argparse.Namespace) -> int:
    from .sweepfile import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _template_note(sweep: Sweep) -> list[str]:
    """How rows become text: the tokenizer's chat template, or what a text_template gives
    (generation metrics when its last field ends it, else loss only)."""
    if sweep.data.conversational:
        return [
            "           no template: rows of messages or prompt/completion, rendered by the tokenizer's chat "
            "template; loss on the assistant turns, generation of the last one"
        ]
    if sweep.data.text_template is None:
        return []
    split = sweep.data.text_split
    if split is None:
        return [
            "           text_template: loss only (eval_loss, eval_perplexity): it has one field, or text "
            "after its last one. End it with the response's field (an end marker such as <|eot_id|> may "
            "follow) for ROUGE and F1."
        ]
    return [
        f"           text_template: generation from the text before {{{split.field}}}, scored against "
        f"{{{split.field}}}" + (f" (up to {split.end})" if split.end else "")
    ]


def _check_data(sweep: Sweep) -> str:
    """Local and built-in data are loaded and their columns checked; hub data is left to `run`."""
    from lorasweep.objectives import check_data

    shape = check_data(sweep.data, sweep.model)
    if shape is None:
        return "(hub data: columns are checked when the sweep runs)"
    sweep.check_batch_fits(shape.train_rows)
    text = f"{shape.train_rows} train rows, {shape.eval_rows} eval rows; columns {', '.join(shape.columns)}"
    if not shape.tokenized:
        text += "\n           (the base's tokenizer is not at hand yet: truncation is checked when it runs)"
    notes = [n for n in (shape.truncation, shape.fit) if n]
    return text + "".join(f"\n           {n}" for n in notes)


def _pruner_text(spec: dict | None) -> str:
    if spec is None:
        return "none"
    options = ", ".join(
        f"{k}={_pruner_text(v) if k == 'wrapped' else v}" for k, v in spec.items() if k != "type"
    )
    return f"{spec['type']}({options})"


def _fields(spec) -> str:
    return " ".join(f"{k}={v!r}" for k, v in vars(spec).items())


def _describe(dist) -> str:
    from .sweepfile import describe

    return describe(dist)


def _trials(args: argparse.Namespace) -> int:
    from ._tables import as_csv, as_json, as_table, trial_rows
    from .progress import objective_names
    from .storage import load_study

    study = load_study(args.study, args.storage)
    objective = objective_names(study)
    rows = trial_rows(study, sort=args.sort, state=args.state)
    if args.json:
        print(as_json(rows))
    elif args.csv:
        print(as_csv(rows, objective), end="")
    else:
        print(as_table(rows, objective))
    return 0


def _best(args: argparse.Namespace) -> int:
    from ._tables import as_table, trial_rows
    from .api import best
    from .progress import fit_line, format_params, format_value, objective_names
    from .storage import load_study

    study = load_study(args.study, args.storage)
    chosen = best(study)
    objective = objective_names(study)
    rows = {r.number: r for r in trial_rows(study)}
    if args.json:
        print(
            json.dumps(
                {
                    "selected": asdict(rows[chosen.number]),
                    "rule": chosen.rule,
                    "candidates": [asdict(rows[n]) for n in chosen.candidates],
                },
                indent=2,
            )
        )
        return 0
    if len(objective) > 1:
        print(f"pareto front ({len(chosen.candidates)} trials):")
        print(as_table([rows[n] for n in chosen.candidates], objective))
    scores = " ".join(f"{m}={format_value(chosen.metrics.get(m))}" for m in objective)
    print(
        fit_line(f"selected: trial {chosen.number} {scores}  {format_params(chosen.params)}  ({chosen.rule})")
    )
    if chosen.run_id:
        print(f"mlflow run {chosen.run_id}; its adapter: {chosen.adapter_uri}")
    if chosen.no_gain is not None:
        print(chosen.no_gain)
    return 0


def _studies(args: argparse.Namespace) -> int:
    from ._tables import align
    from .catalog import list_studies

    rows = list_studies(args.storage)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    lines = [["study", "finished", "best", "parent run", "last activity"]]
    for r in rows:
        done = f"{r.finished}/{r.budget}" if r.budget is not None else str(r.finished)
        when = r.last_activity.replace("T", " ")[:16] if r.last_activity else "-"
        lines.append([r.name, done, r.best, r.parent_run, when])
    print(align(lines) if rows else "no studies in this storage")
    return 0


def _delete(args: argparse.Namespace) -> int:
    from .catalog import KEEP_ALIAS, delete_study, held_aliases, refuse_live
    from .storage import load_study

    study = load_study(args.study, args.storage)
    refuse_live(study, args.force)  # before asking: a yes would not change the answer
    what = f"study {study.study_name!r} ({len(study.get_trials(deepcopy=False))} trials) and its MLflow runs"
    held = held_aliases(study, args.tracking_uri)
    for alias in held:
        print(f"run {alias.run_id} of this study holds {alias}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError(
                f"delete must be confirmed, but got no --yes and no terminal to ask on. Add --yes to "
                f"delete {what}."
            )
        named = f" (one of them holds {', '.join(str(h) for h in held)})" if held else ""
        if input(f"delete {what}{named}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
        if held and args.aliases is None:
            answer = input("keep the alias (it still loads, its run deleted) or drop it? [K/d] ")
            args.aliases = "drop" if answer.strip().lower() in ("d", "drop") else "keep"
    runs = delete_study(
        study,
        args.storage,
        args.tracking_uri,
        force=args.force,
        aliases=args.aliases or KEEP_ALIAS,
        say=print,
    )
    print(f"deleted {what}: {runs} runs, restorable until mlflow gc")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from .handover import promote  # torch.onnx, onnxruntime and MLflow's model code: load on demand
    from .storage import load_study

    study = load_study(args.study, args.storage)
    done = promote(
        study,
        args.trial,
        args.tracking_uri,
        args.out,
        log=_say(args),
        top=args.top,
        force=args.force,
        allow_no_gain=args.allow_no_gain,
    )
    name = done.name
    if done.parity is None:
        return 0
    what = (
        f"trials {', '.join(map(str, done.bundle))} as an adapter bundle"
        if done.bundle
        else f"trial {done.trial.number}"
    )
    print(f"registered: {name} version {done.version} ({what}); exports in {done.folder}/")
    if not done.parity.passed:
        where = (
            f"models:/{name}@champion stays on version {done.previous}"
            if done.previous
            else "no champion yet"
        )
        print(f"not promoted: the parity gate failed ({where}).", file=sys.stderr)
        return 1
    moved = f" (was version {done.previous})" if done.previous else ""
    print(f"champion: models:/{name}@champion -> version {done.version}{moved}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .handover import Parity, export
    from .storage import load_study

    study = load_study(args.study, args.storage)
    trials, parity = export(
        study,
        args.out,
        args.trial,
        tuple(args.precision or ["fp32"]),
        args.tracking_uri,
        log=_say(args),
        top=args.top,
        adapters=args.adapters,
    )
    if isinstance(parity, Parity):
        print(
            f"exported trial {trials[0].number} to {args.out}/ "
            f"({', '.join(m.name for m in parity.models[1:])})"
        )
    else:
        files = ", ".join(f"{a.name}.onnx_adapter" for a in parity.adapters)
        print(
            f"exported trials {', '.join(str(t.number) for t in trials)} to {args.out}/ "
            f"as one base and {files}"
        )
    if not parity.passed:
        print(f"the parity gate failed: see {args.out / 'parity.json'}", file=sys.stderr)
        return 1
    return 0


def _say(args: argparse.Namespace):
    silent = args.quiet or getattr(args, "progress", None) == "none"  # --progress none: as -q
    return (lambda _line: None) if silent else print


def _compare(args: argparse.Namespace) -> int:
    from . import tracking
    from ._tables import compare
    from .record import study_tracking_uri
    from .storage import load_study

    study = load_study(args.study, args.storage)
    print(compare(study, args.numbers, tracking.client(study_tracking_uri(study, args.tracking_uri))))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import make_report
    from .storage import load_study

    study = load_study(args.study, args.storage)
    out = Path(args.out or Path("reports") / study.study_name)
    report = make_report(study, out)
    print(f"wrote {report.page} and {len(report.pngs)} PNGs to {out}/")
    for title, why in report.left_out.items():  # the page says it too
        print(f"left out: {title.lower()}: {why}")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from . import tracking
    from ._serve import is_loopback, serve_dashboard, serve_mlflow
    from .record import StudyRecord, study_tracking_uri
    from .storage import load_study
    from .urls import absolute

    uri = tracking_uri(args.tracking_uri, None)
    parent_run = None
    if not (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        try:  # the store the sweep recorded to, when the storage holds one study (tracking.uri)
            study = load_study(None, args.storage)
            uri, parent_run = study_tracking_uri(study, None), StudyRecord.of(study).parent_run_id
        except UserError:
            pass
    database = sqlite_path(uri)
    if database is not None and database.is_file():
        tracking.client(absolute(uri))  # a store moved with its folder shows the artifacts beside it
    if not is_loopback(args.host):
        print(
            f"warning: --host {args.host} lets other machines read, change and delete every run and "
            "model in this store: the MLflow UI has no login. Serve on 127.0.0.1 (an SSH tunnel reaches "
            "it), or limit it with --allowed-hosts and put it behind an authenticating proxy.",
            file=sys.stderr,
            flush=True,
        )
    servers = [serve_mlflow(uri, args.host, args.port, args.allowed_hosts, args.cors_allowed_origins)]
    try:
        page = tracking.runs_page(servers[0].url, absolute(uri), parent_run)  # the runs table, not GenAI's
        print(f"MLflow UI: {page}  (Ctrl-C stops it)", flush=True)
        if args.dashboard:
            servers.append(serve_dashboard(args.storage, args.host, args.port + 1))
            print(f"optuna-dashboard: {servers[1].url}", flush=True)
        while all(server.running() for server in servers):
            time.sleep(0.5)
        stopped = next(server for server in servers if not server.running())
        print(f"error: {stopped.name} stopped (exit code {stopped.process.returncode})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the way to stop it
        return 0
    finally:
        for server in servers:
            server.stop()


def _quiet_libraries(debug: bool) -> None:
    """Library chatter (progress bars, deprecation notes) drowns the one line per trial. Optuna's
    own per-trial log lines repeat ours; its tracebacks of failed trials show with --debug."""
    import optuna  # every command past --help needs it; its logger is set up when it loads

    optuna.logging.set_verbosity(optuna.logging.WARNING if debug else optuna.logging.ERROR)
    if debug:
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Library notes, not ours: lorasweep's own messages to the user never go through warnings.
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # MLflow logs each database error it then raises; lorasweep says it once, with the fix.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    quiet_libraries()


if __name__ == "__main__":
    sys.exit(main())
