"""Rows that carry their own turns, in the formats TRL and the hub use, rendered by the tokenizer's
chat template when no template is given in the sweep file.

    messages:            [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}, ...]
    prompt, completion:  strings (plain text, no chat template), or lists of turns as above

Loss is on the assistant turns only (or the completion): each assistant turn is the text the chat
template adds for it after rendering the conversation before it with the generation prompt. The
model generates the last assistant turn from everything before it, and is scored against it.
Hand-written because transformers' own assistant mask (return_assistant_tokens_mask) needs a
template written with {% generation %} markers, which few are.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

from .config import InputError

FORMATS = {"messages": ("messages",), "prompt/completion": ("prompt", "completion")}


def conversation_format(columns: list[str]) -> str | None:
    """The format the columns hold: messages, prompt/completion, or None."""
    for name, needed in FORMATS.items():
        if all(c in columns for c in needed):
            return name
    return None


def require_format(columns: list[str]) -> str:
    found = conversation_format(columns)
    if found is None:
        raise InputError(
            "data without templates must have a messages column, or prompt and completion columns, but "
            f"got the columns {', '.join(columns)}. Give data.prompt_template and data.response_template "
            "(or data.text_template) to say how rows become text."
        )
    return found


def encode(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels (-100 outside the assistant turns) of one row."""
    turns = _turns(row)
    if turns is None:  # plain prompt/completion strings
        prompt = tokenizer(row["prompt"])["input_ids"]
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        ids, labels = prompt + completion, [-100] * len(prompt) + completion
    else:
        ids, labels, done = [], [], ""
        for i, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            before = _render(tokenizer, turns[:i], generation_prompt=True)
            through = _render(tokenizer, turns[: i + 1])
            if not (before.startswith(done) and through.startswith(before)):
                raise InputError(
                    "the tokenizer's chat template must render a conversation as its earlier turns' text "
                    "plus the next turn's, but it renders earlier turns differently once a reply follows, "
                    "so the assistant's tokens cannot be told apart. Give data.prompt_template and "
                    "data.response_template instead."
                )
            context = tokenizer(before[len(done) :], add_special_tokens=False)["input_ids"]
            answer = tokenizer(through[len(before) :], add_special_tokens=False)["input_ids"]
            ids += context + answer
            labels += [-100] * len(context) + answer
            done = through
    ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def prompt_and_reference(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """What the model generates from (everything before the last assistant turn, with the generation
    prompt) and what it is scored against (that turn)."""
    turns = _turns(row)
    if turns is None:
        return row["prompt"], row["completion"].strip()
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
    if last is None:
        raise InputError(
            f"a conversation must have an assistant turn to learn and score, but got one with roles "
            f"{[t['role'] for t in turns]}."
        )
    return _render(tokenizer, turns[:last], generation_prompt=True), str(turns[last]["content"]).strip()


def require_chat_template(
    tokenizer: PreTrainedTokenizerBase, rows_format: str, sample: dict[str, Any]
) -> None:
    """Conversational rows need the tokenizer's chat template; plain prompt/completion strings do not."""
    if _turns(sample) is not None and not tokenizer.chat_template:
        raise InputError(
            f"data in the {rows_format} format must be rendered by the tokenizer's chat template, but the "
            "base model's tokenizer has none. Use a base whose tokenizer has one (an instruct or chat "
            "model, or the built-in tiny base), or give data.prompt_template and data.response_template."
        )


def _turns(row: dict[str, Any]) -> list[dict[str, str]] | None:
    """The row's turns; None for plain prompt/completion strings."""
    if "messages" in row and row["messages"] is not None:
        return list(row["messages"])
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        return None
    asked = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    answered = (
        [{"role": "assistant", "content": completion}] if isinstance(completion, str) else list(completion)
    )
    return asked + answered


def _render(
    tokenizer: PreTrainedTokenizerBase, turns: list[dict[str, str]], generation_prompt: bool = False
) -> str:
    text = tokenizer.apply_chat_template(turns, add_generation_prompt=generation_prompt, tokenize=False)
    assert isinstance(text, str)  # tokenize=False: the rendered text, not ids
    return text
