"""Metrics against values computed by hand."""

import pytest

from lorasweep.objectives.metrics import (
    bleu,
    exact_match,
    f1_mode,
    find_label,
    generation_metrics,
    label_f1,
    rouge,
    token_f1,
)


def test_rouge_matches_hand_computed_overlap():
    # 3 of 3 predicted unigrams match, 3 of 6 reference unigrams are covered: F = 2*1*0.5/1.5.
    scores = rouge(["the cat sat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(2 / 3)
    # bigrams: "the cat", "cat sat" both in the reference's 5 bigrams: P=1, R=2/5, F=4/7.
    assert scores["rouge2"] == pytest.approx(4 / 7)
    assert scores["rougeL"] == pytest.approx(2 / 3)


def test_rouge_averages_over_examples():
    scores = rouge(["a b", "x"], ["a b", "y"])
    assert scores["rouge1"] == pytest.approx(0.5)


def test_token_f1_and_exact_match():
    assert token_f1(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx(2 / 3)
    assert token_f1(["dog"], ["cat"]) == 0.0
    assert exact_match(["Positive.", "negative"], ["positive", "neutral"]) == pytest.approx(0.5)


def test_label_f1_is_macro_over_gold_labels():
    # class a: P=1, R=1/2 -> F=2/3; class b: P=1/2, R=1/2 -> F=1/2; a missing label is wrong.
    assert label_f1(["a", "b", "b", None], ["a", "a", "b", "b"]) == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_find_label_takes_the_first_whole_word_label():
    labels = ["positive", "negative", "neutral"]
    assert find_label("negative, not positive", labels) == "negative"
    assert find_label("nonpositive", labels) is None
    assert find_label("Neutral!", labels) == "neutral"


def test_f1_mode_auto_detects_closed_label_sets():
    assert f1_mode("auto", False, ["yes", "no", "yes", "no"]) == "label"
    assert f1_mode("auto", False, [f"free text {i}" for i in range(40)]) == "token"
    assert f1_mode("auto", True, [f"free text {i}" for i in range(40)]) == "label"
    assert f1_mode("token", True, ["yes", "no"]) == "token"


def test_generation_metrics_uses_the_label_column():
    outputs = ["positive, about the food", "neutral, about the room"]
    references = ["positive, about the food", "negative, about the room"]
    metrics = generation_metrics(outputs, references, ["positive", "negative"], "auto")
    assert metrics["exact_match"] == pytest.approx(0.5)
    # positive: P=1 R=1 F=1; negative: never predicted -> F=0.
    assert metrics["f1"] == pytest.approx(0.5)
    assert 0.5 < metrics["rouge1"] < 1.0


def test_bleu_is_sacrebleus_corpus_score():
    # one sentence, brevity penalty 1: the geometric mean of 1-4-gram precisions 5/6, 3/5, 2/4, 1/3
    hypothesis, reference = "the cat sat on a mat", "the cat sat on the mat"
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu([hypothesis], [reference]) == pytest.approx(expected, rel=1e-6)
    assert bleu([reference, reference], [reference, reference]) == pytest.approx(100.0)


def test_accuracy_is_label_accuracy_with_a_label_column_and_exact_match_without():
    outputs = ["positive, about the seat", "it is negative", "no idea", "neutral."]
    references = [
        "positive, about the seat",
        "negative, about the app",
        "neutral, about x",
        "neutral, about y",
    ]
    labelled = generation_metrics(outputs, references, ["positive", "negative", "neutral", "neutral"], "auto")
    assert labelled["accuracy"] == pytest.approx(3 / 4)  # "no idea" names no label
    unlabelled = generation_metrics(outputs, references, None, "token")
    assert unlabelled["accuracy"] == unlabelled["exact_match"] == pytest.approx(1 / 4)


def test_label_f1_and_accuracy_are_scikit_learns():
    import random

    from sklearn.metrics import accuracy_score, f1_score

    rng = random.Random(0)
    for _ in range(200):
        classes = [f"l{i}" for i in range(rng.randint(1, 5))]
        n = rng.randint(1, 30)
        gold = [rng.choice(classes) for _ in range(n)]
        predicted = [rng.choice([*classes, None, "other"]) for _ in range(n)]
        expected = f1_score(
            gold,
            [p or "<none>" for p in predicted],
            labels=sorted(set(gold)),
            average="macro",
            zero_division=0,
        )
        assert label_f1(predicted, gold) == pytest.approx(expected, abs=1e-12)
        labelled = generation_metrics([p or "nothing" for p in predicted], gold, gold, "label")
        found = [p if p in classes else "<none>" for p in predicted]
        assert labelled["accuracy"] == pytest.approx(accuracy_score(gold, found), abs=1e-12)


def test_scoring_libraries_load_only_when_scoring():
    import subprocess
    import sys

    code = (
        "import sys; import lorasweep.objectives.metrics as m; "
        "print(sorted(x for x in ('sklearn', 'rouge_score', 'sacrebleu', 'nltk') if x in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
