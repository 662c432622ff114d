"""What `trials` and `compare` print: trial rows as a table, CSV or JSON, and trials side by side.

Everything comes from the two stores: params, values and metrics from the Optuna study, learning
curves and generations from each trial's MLflow run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from lorasweep.objectives import METRICS

from .choices import STATES
from .errors import UserError
from .progress import format_value, trial_notes
from .record import DUPLICATE_RUN_TAG, PRUNED_STEP, TrialRecord

if TYPE_CHECKING:  # MLflow only for compare: `trials` prints its table without loading it
    from mlflow import MlflowClient

SPARKS = "▁▂▃▄▅▆▇█"


@dataclass
class TrialRow:
    number: int
    state: str
    params: dict[str, Any]
    values: list[float] | None
    metrics: dict[str, float]
    duration_s: float | None
    mlflow_run_id: str | None
    notes: dict[str, Any] = field(default_factory=dict)  # pruned_step, retry_of, duplicate_of, error


def trial_rows(study: optuna.Study, sort: str | None = None, state: str | None = None) -> list[TrialRow]:
    """The study's trials, filtered by state and sorted by a metric (best first, missing last)."""
    rows = [_row(t) for t in study.get_trials(deepcopy=False)]
    if state is not None:
        rows = [r for r in rows if r.state == STATES[state]]
    if sort is not None and sort != "number":
        if sort not in METRICS and sort != "duration":
            raise UserError(
                f"--sort must be number, duration or a metric ({', '.join(METRICS)}), but got sort={sort!r}."
            )
        sign = -1.0 if METRICS.get(sort) == "maximize" else 1.0

        def key(row: TrialRow) -> tuple[bool, float]:
            value = row.duration_s if sort == "duration" else row.metrics.get(sort)
            return value is None, sign * value if value is not None else 0.0

        rows.sort(key=key)
    return rows


def _row(t: FrozenTrial) -> TrialRow:
    kept = TrialRecord.of(t)
    return TrialRow(
        number=t.number,
        state=t.state.name,
        params=dict(t.params),
        # A pruned trial's Optuna value is its last (signed) report, not the objective: left out.
        values=list(t.values) if t.values and t.state.name == "COMPLETE" else None,
        metrics=kept.metrics,
        duration_s=t.duration.total_seconds() if t.duration else None,
        mlflow_run_id=kept.run_id,
        notes=kept.notes,
    )


def as_json(rows: list[TrialRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)


def flat(rows: list[TrialRow], objective: tuple[str, ...]) -> tuple[list[str], list[list[Any]]]:
    """The rows as one flat table, for CSV and DataFrames: number, state, the objective's values,
    param.NAME per parameter, the other metrics, duration_s, mlflow_run_id, note."""
    params = _union(r.params for r in rows)
    metrics = [m for m in _union(r.metrics for r in rows) if m not in objective]
    header = ["number", "state", *objective, *(f"param.{p}" for p in params), *metrics]
    unscored: list[float | None] = [None] * len(objective)  # a trial without values: empty cells
    table = [
        [r.number, r.state, *(r.values or unscored)]
        + [r.params.get(p) for p in params]
        + [r.metrics.get(m) for m in metrics]
        + [r.duration_s, r.mlflow_run_id, _note(r)]
        for r in rows
    ]
    return [*header, "duration_s", "mlflow_run_id", "note"], table


def as_csv(rows: list[TrialRow], objective: tuple[str, ...]) -> str:
    header, table = flat(rows, objective)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerows([header, *table])
    return out.getvalue()


def as_table(rows: list[TrialRow], objective: tuple[str, ...]) -> str:
    """One line per trial: number, state, objective, params, the other metrics, seconds, notes."""
    params = _union(r.params for r in rows)
    metrics = [m for m in _union(r.metrics for r in rows) if m not in objective]
    header = ["trial", "state", *objective, *params, *metrics, "seconds", ""]
    lines = [header]
    for r in rows:
        values = [format_value(v) for v in r.values] if r.values else ["-"] * len(objective)
        lines.append(
            [str(r.number), r.state, *values]
            + [_cell(r.params.get(p)) for p in params]
            + [_cell(r.metrics.get(m)) for m in metrics]
            + [f"{r.duration_s:.1f}" if r.duration_s is not None else "-", _note(r)]
        )
    return align(lines)


def _note(r: TrialRow) -> str:
    pruned = [f"pruned at step {r.notes[PRUNED_STEP]}"] if PRUNED_STEP in r.notes else []
    return "; ".join(pruned + trial_notes(r.notes, short=True))


# -- compare -------------------------------------------------------------------------------------
def compare(study: optuna.Study, numbers: list[int], client: MlflowClient, n_prompts: int = 3) -> str:
    """The chosen trials side by side: params (differences marked), metrics (best marked), eval-loss
    sparklines on one scale, and a few eval prompts with each trial's generation."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    missing = [n for n in numbers if n not in by_number]
    if missing:
        raise UserError(
            f"compare takes trial numbers of the study, but got {', '.join(map(str, missing))}; "
            f"study {study.study_name!r} has trials 0..{max(by_number, default=-1)}."
        )
    rows = [_row(by_number[n]) for n in numbers]
    lines: list[list[str]] = [["", *(f"trial {r.number}" for r in rows)], ["state", *(r.state for r in rows)]]

    lines.append(["params (≠: differs)"] + [""] * len(rows))
    for p in _union(r.params for r in rows):
        cells = [_cell(r.params.get(p)) for r in rows]
        lines.append([("≠ " if len(set(cells)) > 1 else "  ") + p, *cells])

    lines.append(["metrics (*: best)"] + [""] * len(rows))
    for m in _union(r.metrics for r in rows):
        values = [r.metrics.get(m) for r in rows]
        known = [v for v in values if v is not None]
        best = (max if METRICS.get(m) == "maximize" else min)(known) if len(known) > 1 else None
        lines.append(["  " + m, *(_cell(v) + (" *" if v is not None and v == best else "") for v in values)])

    curves = [_curve(client, r.mlflow_run_id) for r in rows]
    points = [v for c in curves for v in c.values()]
    lines.append(["eval_loss curve", *(_sparkline(c, points) for c in curves)])
    steps = sorted({s for c in curves for s in c})
    if steps:
        lines.append(["  steps", *(f"{min(c)}..{max(c)}" if c else "-" for c in curves)])
    out = [align(lines)]

    tables = [_generations(client, by_number[r.number]) for r in rows]
    reference = next((t for t in tables if t), None)
    if reference:
        out.append(f"\ngenerations on the first {min(n_prompts, len(reference))} eval prompts:")
        for i, (prompt, ref, _) in enumerate(reference[:n_prompts]):
            out.append("")
            out.append(f"  prompt     {prompt!r}")
            out.append(f"  reference  {ref!r}")
            for r, table in zip(rows, tables, strict=True):
                output = table[i][2] if table and i < len(table) else "-"
                out.append(
                    f"  trial {r.number:<4} {output!r}" if output != "-" else f"  trial {r.number:<4} -"
                )
    return "\n".join(out)


def _curve(client: MlflowClient, run_id: str | None) -> dict[int, float]:
    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}
    try:
        history = client.get_metric_history(run_id, "eval_loss")
    except MlflowException:
        return {}
    curve: dict[int, float] = {}
    for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
        curve.setdefault(m.step, m.value)  # the Trainer's point; the final exact value comes later
    return curve


def _sparkline(curve: dict[int, float], scale: list[float]) -> str:
    """The curve in block characters, on a scale shared by all the compared curves (logarithmic:
    losses fall over orders of magnitude, and a linear scale flattens every good trial)."""
    if not curve:
        return "-"
    log = all(v > 0 for v in scale)

    def level(v: float) -> float:
        return math.log(v) if log else v

    low, high = min(map(level, scale)), max(map(level, scale))
    span = (high - low) or 1.0
    return "".join(
        SPARKS[round((level(v) - low) / span * (len(SPARKS) - 1))] for _, v in sorted(curve.items())
    )


def _generations(client: MlflowClient, trial: FrozenTrial) -> list[list[str]]:
    """[prompt, reference, output] rows of the trial's generations.json (a duplicate's from the run
    it copies); empty for pruned and failed trials."""
    from mlflow.exceptions import MlflowException

    run_id = TrialRecord.of(trial).run_id
    if not run_id:
        return []
    try:
        tags = client.get_run(run_id).data.tags
        run_id = tags.get(DUPLICATE_RUN_TAG, run_id)
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(run_id, "generations.json", folder)
            return json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    except (MlflowException, OSError, KeyError, ValueError):
        return []


# -- formatting ----------------------------------------------------------------------------------
def _union(dicts) -> list[str]:
    keys: dict[str, None] = {}
    for d in dicts:
        keys.update(dict.fromkeys(d))
    return list(keys)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return format_value(value) if isinstance(value, float) else str(value)


def align(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip() for line in lines
    )
