"""What a registered version says of itself: its tags (where it came from, the gate's verdict and
evidence) and its description. The keys are record.py's; the figures are the gate's (_parity,
_bundle_parity).
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

from ..progress import format_params, format_value
from ..record import (
    ADAPTER_FILE_FIGURE,
    BUNDLE_MERGED_SIZE_TAG,
    BUNDLE_SIZE_TAG,
    BUNDLE_TAG,
    EXPORTER_FIGURE,
    GREEDY_FIGURE,
    LOAD_FIGURE,
    LOGIT_DIFF_FIGURE,
    MERGED_SPEED_FIGURE,
    PERPLEXITY_CHANGE_FIGURE,
    PERPLEXITY_FIGURE,
    RANK_FIGURE,
    SIZE_FIGURE,
    SPEED_FIGURE,
    TrialRecord,
    figure_tag,
    gate_tags,
    origin_tags,
    study_id,
    trial_tags,
)
from ._bundle_parity import BundleParity
from ._parity import Measured, Parity


def version_tags(study: optuna.Study, trial: FrozenTrial, parity: Parity) -> dict[str, str]:
    """A registered model version's tags: where it came from, the gate's verdict, its evidence."""
    tags = origin_tags(study.study_name, study_id(study), trial.number)
    tags |= gate_tags(parity.passed, parity.failures)
    tags |= trial_tags(trial.params, TrialRecord.of(trial).metrics)
    for m in parity.models:
        tags |= _figure_tags(m, parity.prompts)
    return tags


def bundle_version_tags(
    study: optuna.Study, trials: list[FrozenTrial], parity: BundleParity
) -> dict[str, str]:
    """An adapter bundle's version: the same, per adapter (trial-N.*), and the bundle's own figures.
    Its trial is the best, the adapter the version generates with by default."""
    tags = origin_tags(study.study_name, study_id(study), trials[0].number)
    tags[BUNDLE_TAG] = ",".join(str(t.number) for t in trials)
    tags |= gate_tags(parity.passed, parity.failures)
    tags[BUNDLE_SIZE_TAG] = f"{parity.size_bytes / 2**20:.2f}"
    tags[BUNDLE_MERGED_SIZE_TAG] = f"{parity.merged_bytes / 2**20:.2f}"
    tags |= _figure_tags(parity.base, parity.prompts)
    for trial, a in zip(trials, parity.adapters, strict=True):
        tags |= trial_tags(trial.params, TrialRecord.of(trial).metrics, prefix=f"{a.name}.")
        tags |= _figure_tags(a.measured, parity.prompts)
        tags[figure_tag(a.name, ADAPTER_FILE_FIGURE)] = f"onnx/{a.name}.onnx_adapter"
        tags[figure_tag(a.name, RANK_FIGURE)] = str(a.rank)
        tags[figure_tag(a.name, MERGED_SPEED_FIGURE)] = f"{a.merged_ms_per_token:.3f}"
    return tags


def version_description(study_name: str, trials: list[FrozenTrial], parity: Parity | BundleParity) -> str:
    """The version's description: each trial, what the version holds, the gate's verdict."""
    gate = "passed" if parity.passed else "FAILED: " + "; ".join(parity.failures)
    said = []
    for trial in trials:
        scores = " ".join(f"{k}={format_value(v)}" for k, v in TrialRecord.of(trial).metrics.items())
        said.append(f"Trial {trial.number} of study {study_name}: {format_params(trial.params)}. {scores}.")
    if isinstance(parity, BundleParity):
        what = (
            f"An adapter bundle under onnx/: one ONNX base and {', '.join(a.name for a in parity.adapters)}"
            ".onnx_adapter; the pyfunc's adapter param picks the trial"
        )
    else:
        what = f"ONNX exports ({', '.join(m.name for m in parity.models[1:])}) under onnx/"
    return " ".join(said) + f" {what}; parity gate {gate}."


def _figure_tags(m: Measured, prompts: int) -> dict[str, str]:
    figures = {
        SIZE_FIGURE: f"{m.size_bytes / 2**20:.2f}",
        LOAD_FIGURE: f"{m.load_seconds:.3f}",
        SPEED_FIGURE: f"{m.ms_per_token:.3f}",
        PERPLEXITY_FIGURE: f"{m.perplexity:.6g}",
    }
    if m.name != "pytorch":
        figures[EXPORTER_FIGURE] = m.how
        figures[PERPLEXITY_CHANGE_FIGURE] = f"{m.perplexity_change:+.4%}"
        figures[LOGIT_DIFF_FIGURE] = f"{m.max_logit_diff:.3g}"
        figures[GREEDY_FIGURE] = f"{m.identical}/{prompts}"
    return {figure_tag(m.name, figure): value for figure, value in figures.items()}
