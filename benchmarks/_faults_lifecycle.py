"""The faults of a study's life: deleted under a live run or after its journal was replaced, more
workers than the machine holds, a timeout that ends a trial or the sweep, a search space edited
between runs, Ctrl-C pressed three times."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

from _faults_harness import (
    STUDY,
    Done,
    Row,
    client,
    cut,
    ended,
    finished,
    lorasweep,
    nothing_written,
    running,
    running_trial,
    runs,
    spawn,
    start,
    sweep,
    trials,
    wait_for,
)

LONG = "max_steps: 1000000, eval_steps: 500000, logging_steps: 10, per_device_train_batch_size: 8"


def _family(folder: Path, parent: str) -> list:
    """The parent run and its trial runs, deleted ones too."""
    return [r for r in runs(folder) if parent in (r.info.run_id, r.data.tags.get("mlflow.parentRunId"))]


def _parents(folder: Path) -> list[str]:
    found = [r for r in runs(folder) if r.data.tags.get("lorasweep.role") == "study"]
    return [r.info.run_id for r in sorted(found, key=lambda r: r.info.start_time)]


def delete_after_journal_moved(folder: Path) -> Row:
    """A second study under the first's name, in the same MLflow experiment; then deleted."""
    start(folder, 3)
    (folder / "mlruns" / "optuna.journal").rename(folder / "old.journal")
    start(folder, 3)
    first, second = _parents(folder)
    done = lorasweep(folder, "delete", STUDY, "--yes")
    kept = [r for r in _family(folder, first) if r.info.lifecycle_stage == "active"]
    deleted = [r for r in _family(folder, second) if r.info.lifecycle_stage == "deleted"]
    said = [line for line in done.out if line.strip()]
    return Row(
        "`run`; optuna.journal moved aside; `run` (a new study, same name); `delete faults --yes`",
        done.first() + (f'; "{cut(said[-1])}"' if said else ""),
        "-",
        running(folder),
        f"first study: {len(kept)}/{len(_family(folder, first))} runs kept; second: "
        f"{len(deleted)}/{len(_family(folder, second))} deleted",
    )


def delete_while_training(folder: Path) -> Row:
    """`delete` while `run` trains trial 0 (a million steps): refused, then with --force."""
    (folder / "s.yaml").write_text(sweep(3, train=LONG), encoding="utf-8")
    sweeping = spawn(folder, "run", "s.yaml")
    wait_for(lambda: running_trial(folder) is not None, timeout=180)
    time.sleep(3)  # into its training steps
    refused = lorasweep(folder, "delete", STUDY, "--yes")
    forced = lorasweep(folder, "delete", STUDY, "--yes", "--force")
    stopped = ended(sweeping, timeout=120)
    status = Counter(f"{r.info.status} ({r.info.lifecycle_stage})" for r in runs(folder))
    return Row(
        "`delete faults --yes` while `run` trains trial 0, then with `--force`",
        f"delete: {refused.first()}; --force: {forced.exit()}; the run: {_stopped(stopped)}",
        "-",
        running(folder),
        f"runs: {', '.join(f'{n} {s}' for s, n in sorted(status.items()))}",
    )


def too_many_workers(folder: Path) -> Row:
    """`--workers 64` on this machine (with --force it would start them: not done here)."""
    (folder / "s.yaml").write_text(sweep(3), encoding="utf-8")
    many = lorasweep(folder, "run", "s.yaml", "--workers", "64")
    return Row(
        f"`run --workers 64` on {os.cpu_count()} cores",
        many.first(),
        "-",
        running(folder),
        f"nothing written: {nothing_written(folder)}",
    )


def timeout_mid_trial(folder: Path) -> list[Row]:
    """study.timeout: 10 and train.max_steps: 1e9: the deadline falls in trial 0; then n_trials 1e6."""
    text = sweep(3, study=", timeout: 10", train="max_steps: 1000000000, per_device_train_batch_size: 8")
    (folder / "s.yaml").write_text(text, encoding="utf-8")
    checked = lorasweep(folder, "validate", "s.yaml")
    notes = [line for line in checked.out + checked.err if line.startswith(("note:", "warning:"))]
    note = next((line for line in notes if "max_steps" in line or "timeout" in line), "no note")
    began = time.monotonic()
    first = lorasweep(folder, "run", "s.yaml")
    seconds = time.monotonic() - began
    zero = {t.number: t.state.name for t in trials(folder)}
    left = running(folder)
    again = lorasweep(folder, "run", "s.yaml")
    retries = [t.number for t in trials(folder) if t.user_attrs.get("retry_of") == 0]
    trial_row = Row(
        "`study.timeout: 10`, `train.max_steps: 1000000000`",
        f'validate: exit {checked.code}, "{cut(note)}"; run ({seconds:.0f} s): {_said(first)}',
        "-",
        left,
        f"trials after it: {zero}; rerun: {_said(again)}; retries of trial 0: {retries or 'none'}",
    )

    (folder / "budget").mkdir()
    (folder / "budget" / "s.yaml").write_text(sweep(1_000_000, study=", timeout: 10"), encoding="utf-8")
    began = time.monotonic()
    done = lorasweep(folder / "budget", "run", "s.yaml")
    seconds = time.monotonic() - began
    sweep_row = Row(
        "`n_trials: 1000000`, `timeout: 10`",
        f"{_said(done)}",
        "-",
        running(folder / "budget"),
        f"{len(finished(folder / 'budget'))} finished; the command took {seconds:.0f} s",
    )
    return [trial_row, sweep_row]


def _said(done) -> str:
    """Its exit and the line that says why it stopped (else its first)."""
    said = done.out + done.err
    why = [line for line in said if "ended the sweep" in line] or [
        line for line in said if "timeout" in line.lower() or "deadline" in line.lower()
    ]
    line = why[0] if why else (done.shown[0] if done.shown else "")
    return done.exit() + (f', "{cut(line)}"' if line else "")


def space_changed(folder: Path) -> Row:
    """lora_r a choice -> an int range, batch_size [8, 16] -> [4, 8], between two runs."""
    space = "  lora_r: {type: choice, values: [2, 4, 8]}\n  batch_size: {type: choice, values: [8, 16]}\n"
    train = "max_steps: 6, eval_steps: 3, logging_steps: 3"
    start(folder, 3, sweep(3, train=train, space=space))
    before = len(trials(folder))
    edited = "  lora_r: {type: int, low: 2, high: 8}\n  batch_size: {type: choice, values: [4, 8]}\n"
    (folder / "s.yaml").write_text(sweep(3, train=train, space=edited), encoding="utf-8")
    done = lorasweep(folder, "run", "s.yaml", "--trials", "4")
    text = "\n".join(done.err)
    named = all(name in text for name in ("lora_r", "batch_size"))
    return Row(
        "search space edited (`lora_r` choice -> int, `batch_size` [8, 16] -> [4, 8]), `run --trials 4`",
        done.first(),
        "-",
        running(folder),
        f"both parameters named: {named}; trials in the study: {before} -> {len(trials(folder))}",
    )


def _stopped(done: Done) -> str:
    """A stopped command's exit and stderr lines (the first quoted)."""
    said = done.printed
    return f"{done.exit()}, {len(said)} line(s)" + (f': "{cut(said[0])}"' if said else "")


def _closed(folder: Path) -> str:
    """Trial 0's state, its run's status and state tag, the parent run's status."""
    trial = next(iter(trials(folder)), None)
    if trial is None:
        return "no trial 0"
    run_id = trial.user_attrs.get("mlflow_run_id")
    run = client(folder).get_run(run_id) if run_id else None
    parent = [r for r in runs(folder) if r.data.tags.get("lorasweep.role") == "study"]
    return (
        f"trial 0 {trial.state.name}, its run "
        + (f"{run.info.status} (lorasweep.state={run.data.tags.get('lorasweep.state')})" if run else "-")
        + f", parent {parent[0].info.status if parent else '-'}"
    )


def sigint_thrice(folder: Path) -> Row:
    """Ctrl-C three times within 60 ms, 3 s into trial 0's training; then the same command."""
    train = "max_steps: 150, eval_steps: 75, logging_steps: 10, per_device_train_batch_size: 8"
    (folder / "s.yaml").write_text(sweep(1, train=train), encoding="utf-8")
    sweeping = spawn(folder, "run", "s.yaml", group=True)
    wait_for(lambda: running_trial(folder) is not None, timeout=180)
    time.sleep(3)
    for _ in range(3):  # Ctrl-C: to the foreground process group
        os.killpg(sweeping.pid, signal.SIGINT)
        time.sleep(0.03)
    stopped = ended(sweeping, timeout=120)
    left, closed = running(folder), _closed(folder)
    scratch = list(Path(os.environ["TMPDIR"]).iterdir())  # this case's own TMPDIR
    ours = sorted(p.name for p in scratch if p.name.startswith("lorasweep-"))  # a trial's, a report's
    others = sorted(p.name for p in scratch if p.name not in ours)  # the libraries' (torch's caches)
    again = lorasweep(folder, "-q", "run", "s.yaml")
    retry = [t.number for t in trials(folder) if t.user_attrs.get("retry_of") == 0 and t.state.name != "FAIL"]
    retried = f"trial {retry[0]} a retry of 0" if retry else "no retry of trial 0"
    return Row(
        "SIGINT three times within 60 ms to `run`'s process group (Ctrl-C), 3 s into a trial",
        _stopped(stopped),
        "-",
        left,
        f"{closed}; left in TMPDIR: lorasweep's {ours or 'nothing'}, the libraries' {others or 'nothing'}; "
        f"rerun: {again.exit()}, "
        f"{len(finished(folder))}/1 finished, {retried}",
    )
