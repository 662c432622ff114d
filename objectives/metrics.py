"""Scores for generated text: ROUGE (rouge-score), BLEU (sacrebleu), label F1 and accuracy (as
scikit-learn's macro f1_score and accuracy_score compute them), or token overlap and exact match for
free text.

`evaluate.load("rouge")` needs the hub and fails offline; rouge-score is the implementation it
wraps, so it is called directly. Perplexity is computed in the recipe, where the logits are.

rouge-score (with nltk, 0.4-1.3 s) and sacrebleu are imported inside the functions that score, so
that a process only loads them when it generates (data.py imports this module for is_closed_set).
F1 and accuracy are written out rather than taken from scikit-learn, whose import (0.5-1.3 s, with
scipy) would cost every trial process more than the counting does; tests/test_metrics.py holds them
equal to scikit-learn's.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Literal

# Responses form a "small closed set" (a classification task) when they take at most this many
# distinct values: then F1 is macro-F1 over those labels, otherwise token-overlap F1.
MAX_LABELS = 20


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and extra spaces (SQuAD's normalisation, without articles)."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure, as evaluate's "rouge" reports it (stemmed)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = dict.fromkeys(("rouge1", "rouge2", "rougeL"), 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        for name, score in scorer.score(reference, prediction).items():
            totals[name] += score.fmeasure
    n = max(len(predictions), 1)
    return {name: totals[name] / n for name in ("rouge1", "rouge2", "rougeL")}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100) as sacrebleu reports it: its 13a tokenizer, one reference per example. Like
    any BLEU it is 0 for a corpus without a matching 4-gram (one-word labels, for one)."""
    from sacrebleu.metrics import BLEU

    return float(BLEU().corpus_score(list(predictions), [list(references)]).score)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    pairs = list(zip(predictions, references, strict=True))
    return sum(normalize(p) == normalize(r) for p, r in pairs) / max(len(pairs), 1)


def token_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean token-overlap F1 (SQuAD style). Hand-written because evaluate's "squad" needs the hub
    and scikit-learn has no bag-of-tokens F1; it is ten lines."""
    scores = []
    for prediction, reference in zip(predictions, references, strict=True):
        pred, ref = normalize(prediction).split(), normalize(reference).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if not pred or not ref:
            scores.append(float(pred == ref))
        elif common == 0:
            scores.append(0.0)
        else:
            precision, recall = common / len(pred), common / len(ref)
            scores.append(2 * precision * recall / (precision + recall))
    return sum(scores) / max(len(scores), 1)


def find_label(text: str, labels: Sequence[str]) -> str | None:
    """The label a generation names: the known label that appears first, as a whole word."""
    best: tuple[int, str] | None = None
    for label in labels:
        match = re.search(rf"(?<!\w){re.escape(normalize(label))}(?!\w)", normalize(text))
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), label)
    return best[1] if best else None


def label_f1(predicted: Sequence[str | None], gold: Sequence[str]) -> float:
    """Macro-F1 over the gold labels; a prediction that names no label counts as wrong."""
    labels = sorted(set(gold))
    pairs = list(zip(predicted, gold, strict=True))
    scores = []
    for label in labels:  # per label F1 = 2tp / (2tp + fp + fn); 0 where nothing is predicted or true
        tp = sum(p == label and g == label for p, g in pairs)
        fp = sum(p == label and g != label for p, g in pairs)
        fn = sum(p != label and g == label for p, g in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def is_closed_set(responses: Sequence[str]) -> bool:
    """Whether responses look like class labels: few distinct values, each seen about twice or more."""
    distinct = len({normalize(r) for r in responses})
    return distinct <= min(MAX_LABELS, max(2, len(responses) // 2))


def f1_mode(
    mode: Literal["auto", "label", "token"], has_label_column: bool, references: Sequence[str]
) -> Literal["label", "token"]:
    """auto: label F1 when a label column is named or the references form a small closed set."""
    if mode != "auto":
        return mode
    return "label" if has_label_column or is_closed_set(references) else "token"


def generation_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    labels: Sequence[str] | None,
    mode: Literal["auto", "label", "token"],
) -> dict[str, float]:
    """All generation metrics at once. `labels` is the gold label per example, when a label column
    is named; without one, label F1 treats each whole reference as its label."""
    metrics = rouge(predictions, references)
    metrics["bleu"] = bleu(predictions, references)
    metrics["exact_match"] = exact_match(predictions, references)
    if f1_mode(mode, labels is not None, references) == "label":
        gold = list(labels) if labels is not None else [normalize(r) for r in references]
        predicted = [find_label(p, sorted(set(gold))) for p in predictions]
        metrics["f1"] = label_f1(predicted, gold)
    else:
        metrics["f1"] = token_f1(predictions, references)
    # accuracy: of the label over label_column where one is named, else exact match
    if labels is not None:
        predicted = [find_label(p, sorted(set(labels))) or "<none>" for p in predictions]
        metrics["accuracy"] = sum(p == g for p, g in zip(predicted, labels, strict=True)) / max(
            len(predicted), 1
        )
    else:
        metrics["accuracy"] = metrics["exact_match"]
    return metrics
