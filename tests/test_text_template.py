"""Olive's single text_template gets generation metrics: the text before its last field is the
prompt, that field the response."""

from __future__ import annotations

import json

import optuna
import pytest

from lorasweep.objectives.config import TextSplit, split_text_template
from lorasweep.search.cli import main

LLAMA3 = (
    "<|start_header_id|>user<|end_header_id|>\n\n{phrase}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{tone}<|eot_id|>"
)


@pytest.mark.parametrize(
    "template, split",
    [
        (
            LLAMA3,
            TextSplit(
                "<|start_header_id|>user<|end_header_id|>\n\n{phrase}<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n",
                "tone",
                "<|eot_id|>",
            ),
        ),
        (
            "### Text: {phrase}\n### The tone is:\n{tone}",
            TextSplit("### Text: {phrase}\n### The tone is:\n", "tone", ""),
        ),
        ("{phrase!r:>10} -> {tone}</s>\n", TextSplit("{phrase!r:>10} -> ", "tone", "</s>")),
        (
            "{{JSON}} {phrase} -> {tone}",
            TextSplit("{{JSON}} {phrase} -> ", "tone", ""),
        ),  # braces kept escaped
        ("{phrase} is {tone}. Really.", None),  # text after the last field: it is not the response
        ("Just {phrase}", None),  # one field: nothing to generate from
    ],
)
def test_a_text_template_splits_before_its_last_field(template, split):
    assert split_text_template(template) == split


def test_a_text_template_sweep_scores_generations_against_its_last_field(in_tmp, capsys):
    (in_tmp / "s.yaml").write_text(
        "study: {name: tt, metric: f1, n_trials: 1}\n"
        'data: {text_template: "Phrase: {phrase}\\nTone: {tone}", train_split: "train[:800]", '
        'eval_split: "train[1400:1464]"}\n'
        "train: {max_steps: 60}\n"
        "search_space:\n  learning_rate: {type: choice, values: [0.005]}\n",
        encoding="utf-8",
    )
    assert main(["validate", "s.yaml"]) == 0
    assert (
        "text_template: generation from the text before {tone}, scored against {tone}"
        in capsys.readouterr().out
    )
    assert main(["-q", "run", "s.yaml"]) == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(in_tmp / "mlruns" / "optuna.journal"))
    )
    trial = optuna.load_study(study_name="tt", storage=storage).trials[0]
    metrics = trial.user_attrs["metrics"]
    assert {"eval_perplexity", "rouge1", "f1", "bleu", "accuracy"} <= set(metrics)
    assert metrics["f1"] > 0.1 and metrics["rouge1"] > 0  # the base scores 0: the trial learnt tones


def test_a_template_that_cannot_split_stays_loss_only_and_says_so(in_tmp, capsys):
    text = (
        "study: {name: tt, metric: eval_loss, n_trials: 1}\n"
        'data: {text_template: "{phrase} sounds {tone} to me."}\n'
        "search_space:\n  learning_rate: {type: choice, values: [0.005]}\n"
    )
    (in_tmp / "s.yaml").write_text(text, encoding="utf-8")
    assert main(["validate", "s.yaml"]) == 0
    assert "text_template: loss only (eval_loss, eval_perplexity)" in capsys.readouterr().out
    (in_tmp / "s.yaml").write_text(text.replace("metric: eval_loss", "metric: f1"), encoding="utf-8")
    assert main(["validate", "s.yaml"]) == 2
    assert "metric f1 needs prompts to generate from" in capsys.readouterr().err


def test_text_the_tiny_base_cannot_learn_gets_a_note_pointing_to_a_real_base(in_tmp, capsys):
    """The seed material's Llama-3 header splits into characters under the tiny base's tokenizer."""
    (in_tmp / "s.yaml").write_text(
        "study: {name: tt, metric: f1, n_trials: 1}\n"
        f"data: {{text_template: {json.dumps(LLAMA3)}}}\n"  # a JSON string is a YAML string
        "search_space:\n  learning_rate: {type: choice, values: [0.005]}\n",
        encoding="utf-8",
    )
    assert main(["validate", "s.yaml"]) == 0
    out = capsys.readouterr().out
    assert "note: the built-in tiny base splits this data into" in out
    assert "model.base: HuggingFaceTB/SmolLM2-135M" in out
    assert "text_template: generation from the text before {tone}" in out
    (in_tmp / "s.yaml").write_text(
        'data: {text_template: "Phrase: {phrase}\\nTone: {tone}"}\n'
        "search_space:\n  learning_rate: {type: choice, values: [0.005]}\n",
        encoding="utf-8",
    )
    assert main(["validate", "s.yaml"]) == 0
    assert "tokens per word" not in capsys.readouterr().out  # the tone data: what the base knows
