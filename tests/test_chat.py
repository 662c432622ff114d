"""Rows of messages, or prompt/completion, rendered by the tokenizer's chat template: loss on the
assistant turns only, generation of the last one."""

from __future__ import annotations

import shutil

import optuna
import pytest
from transformers import AutoTokenizer

from lorasweep.objectives import chat
from lorasweep.objectives.config import InputError
from lorasweep.objectives.tiny import ensure_tiny_base
from lorasweep.search.cli import main

CONVERSATION = [
    {"role": "user", "content": "what a great seat"},
    {"role": "assistant", "content": "positive, about the seat"},
    {"role": "user", "content": "the battery died again"},
    {"role": "assistant", "content": "negative, about the battery"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(ensure_tiny_base())


def _labelled_text(tokenizer, encoded) -> list[str]:
    """The runs of labelled tokens, decoded."""
    runs, current = [], []
    for token, label in zip(encoded["input_ids"], encoded["labels"], strict=True):
        if label == -100:
            if current:
                runs.append(tokenizer.decode(current))
            current = []
        else:
            assert label == token
            current.append(token)
    return runs + ([tokenizer.decode(current)] if current else [])


def test_loss_is_on_every_assistant_turn_and_nothing_else(tokenizer):
    encoded = chat.encode({"messages": CONVERSATION}, tokenizer, max_length=128)
    assert tokenizer.decode(encoded["input_ids"]) == tokenizer.apply_chat_template(
        CONVERSATION, tokenize=False
    )
    assert _labelled_text(tokenizer, encoded) == [
        " positive, about the seat<|eos|>\n",
        " negative, about the battery<|eos|>\n",
    ]


def test_the_last_assistant_turn_is_generated_from_the_turns_before_it(tokenizer):
    prompt, reference = chat.prompt_and_reference({"messages": CONVERSATION}, tokenizer)
    assert (
        prompt == "Phrase: what a great seat\nTone: positive, about the seat<|eos|>\n"
        "Phrase: the battery died again\nTone:"
    )
    assert reference == "negative, about the battery"


def test_prompt_completion_in_plain_and_conversational_form(tokenizer):
    plain = {"prompt": "Phrase: so wow\nTone:", "completion": " sarcastic, about the app"}
    encoded = chat.encode(plain, tokenizer, max_length=128)
    assert _labelled_text(tokenizer, encoded) == [" sarcastic, about the app<|eos|>"]
    assert chat.prompt_and_reference(plain, tokenizer) == (
        "Phrase: so wow\nTone:",
        "sarcastic, about the app",
    )
    turns = {"prompt": [CONVERSATION[0]], "completion": [CONVERSATION[1]]}
    assert _labelled_text(tokenizer, chat.encode(turns, tokenizer, 128)) == [
        " positive, about the seat<|eos|>\n"
    ]
    assert chat.prompt_and_reference(turns, tokenizer)[1] == "positive, about the seat"
    assert chat.conversation_format(["prompt", "completion", "id"]) == "prompt/completion"
    with pytest.raises(InputError, match="must have a messages column, or prompt and completion columns"):
        chat.require_format(["text", "label"])


def _write_rows(path, n: int = 400) -> None:
    source = ensure_tiny_base().parent.parent / "assets" / "tone_chat.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines()[:n]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_messages_sweep_learns_the_assistant_turn(in_tmp, capsys):
    _write_rows(in_tmp / "rows.jsonl")
    (in_tmp / "s.yaml").write_text(
        "study: {name: chat, metric: f1, n_trials: 1}\n"
        "data: {path: rows.jsonl, label_column: tone, eval_split: 'train[320:400]',"
        " train_split: 'train[:320]'}\n"
        "train: {max_steps: 60, learning_rate: 0.005}\n"
        "search_space:\n  lora_r: {type: choice, values: [8]}\n",
        encoding="utf-8",
    )
    assert main(["validate", "s.yaml"]) == 0
    assert "rendered by the tokenizer's chat template" in capsys.readouterr().out
    assert main(["-q", "run", "s.yaml"]) == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(in_tmp / "mlruns" / "optuna.journal"))
    )
    metrics = optuna.load_study(study_name="chat", storage=storage).trials[0].user_attrs["metrics"]
    assert {"eval_perplexity", "rouge1", "f1", "bleu", "accuracy"} <= set(metrics)
    assert metrics["f1"] > 0.1  # the base scores 0


def test_conversations_without_a_chat_template_are_refused(in_tmp, capsys):
    base = in_tmp / "base"
    shutil.copytree(ensure_tiny_base(), base)
    (base / "chat_template.jinja").unlink()
    _write_rows(in_tmp / "rows.jsonl", 40)
    (in_tmp / "s.yaml").write_text(
        f"study: {{name: chat, n_trials: 1}}\nmodel: {{base: {base}}}\ndata: {{path: rows.jsonl}}\n"
        "search_space:\n  lora_r: {type: choice, values: [8]}\n",
        encoding="utf-8",
    )
    assert main(["run", "s.yaml"]) == 2
    err = capsys.readouterr().err
    assert "data in the messages format must be rendered by the tokenizer's chat template" in err
    assert "Traceback" not in err and not (in_tmp / "mlruns" / "optuna.journal").exists()
