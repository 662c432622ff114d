"""Data for a trial: load rows, split train/eval, render templates, tokenize once.

Rows come through `datasets` whatever their source (a local jsonl/json/csv/parquet file, a hub id, or
the built-in data set), so split expressions like `train[:80%]` work everywhere. Loss is taken on
response tokens only: prompt tokens are labelled -100.
"""

from __future__ import annotations

import codecs
import json
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from . import chat
from ._split import split_indices
from .config import (
    BUILTIN_DATA_PREFIX,
    TINY_BASE_NAME,
    WRONG_KIND_OF_FILE,
    InputError,
    template_fields,
)
from .metrics import is_closed_set
from .model import tokenizer_at_hand
from .specs import DataSpec, ModelSpec
from .tiny import fit_note

# Tokens of real text are rarely longer than this many characters, so a text cut at max_length *
# MAX_CHARS_PER_TOKEN characters still holds the max_length tokens that are kept of it (and a text
# of longer tokens lost those anyway).
MAX_CHARS_PER_TOKEN = 32
_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class TaskData:
    """The tokenized splits plus what generation needs: prompts, references and gold labels."""

    train: datasets.Dataset  # input_ids, attention_mask, labels
    eval: datasets.Dataset
    eval_prompts: list[str]
    eval_references: list[str]
    eval_labels: list[str] | None  # from data.label_column, when named
    eval_stop: str | None = None  # an end marker a text_template puts after the response
    # Rows whose prompt alone fills data.max_length, so truncation cut off their whole response:
    # they teach nothing and score nothing. Counted per split.
    lost_responses: dict[str, int] = field(default_factory=dict)

    def lost_note(self, max_length: int) -> str | None:
        """One line on the rows that lost their response, if any did."""
        parts = [
            f"{n} of {len(getattr(self, split))} {split} rows"
            for split, n in self.lost_responses.items()
            if n
        ]
        if not parts:
            return None
        return (
            f"note: {' and '.join(parts)} lose their whole response to data.max_length={max_length} "
            "(their prompts fill it): they teach and score nothing. Raise data.max_length, or shorten "
            "the prompts."
        )


def resolve_path(spec: DataSpec) -> str:
    """The built-in data sets live in the package; anything else is returned as given."""
    if spec.path.startswith(BUILTIN_DATA_PREFIX):
        name = spec.path.removeprefix(BUILTIN_DATA_PREFIX)
        asset = resources.files(__package__) / "assets" / f"{name}.jsonl"
        if not asset.is_file():
            raise InputError(
                f"data.path must name a built-in data set, a file or a hub id, but got "
                f"path={spec.path!r}. The built-in data set is builtin:tone."
            )
        return str(asset)
    return spec.path


@dataclass(frozen=True)
class DataShape:
    train_rows: int
    eval_rows: int
    columns: list[str]
    truncation: str | None  # the note on rows that lose their response; None: none do, or unknown
    tokenized: bool  # whether the base's tokenizer was at hand to count them
    fit: str | None = None  # the note on data the built-in tiny base cannot learn


def check_data(spec: DataSpec, model: ModelSpec) -> DataShape | None:
    """Load local or built-in data and check its columns, and, where the base's tokenizer is at
    hand, what truncation does to it (InputError for what cannot work), as a run would; hub data is
    left to the run (None)."""
    if not (spec.path.startswith(BUILTIN_DATA_PREFIX) or Path(spec.path).exists()):
        return None
    train, eval_ = load_rows(spec)
    tokenizer = tokenizer_at_hand(model)
    note = fit = None
    if tokenizer is not None:
        tokenized = tokenize(spec, train, eval_, tokenizer)
        note = tokenized.lost_note(spec.max_length)
        if model.base == TINY_BASE_NAME:
            fit = fit_note(tokenized.eval["input_ids"], tokenizer)
    return DataShape(len(train), len(eval_), list(train.column_names), note, tokenizer is not None, fit)


def load_rows(spec: DataSpec) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Raw train and eval rows. Without an eval split, one is carved out of train (stratified on
    the label when there is one) so that eval never sees training rows."""
    train = _load_split(spec, "train_split")
    _check_rows(spec, train, "train")  # before the carve-out renders the response template
    if spec.eval_split is not None:
        eval_ = _load_split(spec, "eval_split")
    else:
        train, eval_ = _carve_eval(train, spec)
    for split_name, rows in (("train", train), ("eval", eval_)):
        _check_rows(spec, rows, split_name)
    if len(eval_) > spec.max_eval_rows:
        # A loss over a few thousand rows estimates the whole split's well, and it is computed at
        # every evaluation of every trial: a seeded sample, the same for every trial and worker.
        keep = random.Random(spec.seed).sample(range(len(eval_)), spec.max_eval_rows)
        eval_ = eval_.select(sorted(keep))
    return train, eval_


def _check_rows(spec: DataSpec, rows: datasets.Dataset, split_name: str) -> None:
    if len(rows) == 0:
        raise InputError(
            f"the {split_name} split must hold rows, but got 0 rows from "
            f"path={spec.path!r}. Check data.{split_name}_split."
        )
    _check_fields(spec, rows)


def _load_split(spec: DataSpec, key: str) -> datasets.Dataset:
    """The rows of data.<key> (train_split or eval_split), a `datasets` split expression."""
    path, split = resolve_path(spec), getattr(spec, key)
    local = Path(path)
    builder = _BUILDERS.get(local.suffix.lower())
    try:
        if builder is not None and spec.is_url:
            return datasets.load_dataset(builder, data_files={"train": path}, split=split)
        if builder is None and local.is_file():
            raise InputError(WRONG_KIND_OF_FILE.format(path=path))
        if builder is not None:
            return _load_file(local, path, builder, split)
        return datasets.load_dataset(path, spec.name, split=split)
    except InputError:
        raise
    except datasets.exceptions.DatasetGenerationError as e:  # a malformed row
        cause = str(e.__cause__ or e).strip().splitlines()[0]
        if local.suffix.lower() == ".jsonl":
            cause = _first_bad_json_line(local) or cause
        raise InputError(
            f"data.path must be a well-formed {local.suffix.lstrip('.') or builder} file, but "
            f"reading path={path!r} failed: {cause}"
        ) from None
    except (ValueError, OSError, ConnectionError) as e:  # a bad split, a missing file, no hub
        raise _not_loaded(e, spec, key, path, split) from None


def _load_file(local: Path, path: str, builder: str, split: str | None) -> datasets.Dataset:
    """A local data file read by `datasets`' builder for its suffix, once it is known to hold text."""
    if not local.is_file():
        raise InputError(
            f"data.path must be an existing file, but got path={path!r}. "
            "Check the path (relative paths start at the sweep file's folder)."
        )
    if builder != "parquet":
        _check_utf8(local)
    with local.open("rb") as f:
        empty = not f.read(4096).strip()
    if empty:  # the json loader would die on a bare StopIteration
        raise InputError(f"data.path must hold rows, but got an empty file: path={path!r}.")
    rows = datasets.load_dataset(builder, data_files={"train": str(local)}, split=split)
    if builder == "csv":
        _check_header(rows.column_names, path)
    return rows


def _not_loaded(e: Exception, spec: DataSpec, key: str, path: str, split: str | None) -> InputError:
    """What `datasets` raising ValueError, OSError or ConnectionError means for the user's data."""
    if "corresponds to no data" in str(e):
        return InputError(
            f"data.{key} must select rows, but got {key}={split!r}, which selects none of path={path!r}."
        )
    reason = str(e).splitlines()[0]
    if spec.is_url or "split" not in reason.lower():
        return InputError(
            f"data must load from path={path!r}, but got: {reason}. Check the path, the hub id or "
            "the URL, and that this machine can reach it."
        )
    return InputError(
        f"data must load from path={path!r} with split={split!r}, but got: {reason}. Split "
        "expressions look like train, train[:80%] or train[100:200]."
    )


# What a CSV header's column names look like (pandas names a header's empty cell "Unnamed: N").
_COLUMN_NAME = re.compile(r"[\w][\w .,()\[\]/%#&+?'-]{0,63}|Unnamed: \d+")


def _check_header(columns: list[str], path: str) -> None:
    """A .csv file's first line must name its columns. Any text file reads as a CSV of one column
    (a password file, a key, a log), whose "column name" is its first line: such a file is refused
    without quoting that line, which may be a secret."""
    odd = [c for c in columns if not _COLUMN_NAME.fullmatch(str(c))]
    if odd:
        raise InputError(
            f"data.path must be a CSV file whose first line names its columns, but got path={path!r}, "
            f"whose first line holds {len(odd)} of {len(columns)} fields that are not column names (too "
            "long, or with characters such as ':' or '$'). Check that data.path names the data file, "
            "and that its first line is a header such as question,answer."
        )


def _first_bad_json_line(path: Path) -> str | None:
    """Which line of a JSON Lines file is the first that is not a JSON object, and why. Arrow's
    parser counts rows from 0 within a block, which names the wrong line."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                if isinstance(json.loads(line), dict):
                    continue
                why = "a JSON value, not an object"
            except json.JSONDecodeError as e:
                why = f"{e.msg} at column {e.colno}"
            return f"line {number} is not a JSON object: {why}"
    return None


def _check_utf8(path: Path) -> None:
    """Text data must be UTF-8. The loaders would fail on the first bad byte with an Arrow or a
    codec error that names neither the file nor the line, or read mojibake without a word."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                line += chunk[: e.start].count(b"\n")
                raise InputError(
                    f"data.path must be a UTF-8 file, but got the byte {chunk[e.start]:#x} on line {line} "
                    f"of path={str(path)!r}, which UTF-8 cannot decode. Re-save the file as UTF-8 "
                    "(for example: iconv -f latin1 -t utf-8)."
                ) from None
            line += chunk.count(b"\n")


def _carve_eval(rows: datasets.Dataset, spec: DataSpec) -> tuple[datasets.Dataset, datasets.Dataset]:
    strata = _strata(rows, spec)
    try:
        train_idx, eval_idx = split_indices(len(rows), spec.eval_fraction, spec.seed, strata)
    except ValueError:  # a class with a single row cannot be stratified: split plainly instead
        train_idx, eval_idx = split_indices(len(rows), spec.eval_fraction, spec.seed)
    return rows.select(sorted(train_idx)), rows.select(sorted(eval_idx))


def _strata(rows: datasets.Dataset, spec: DataSpec) -> list[str] | None:
    if spec.label_column and spec.label_column in rows.column_names:
        return [str(v) for v in rows[spec.label_column]]
    if spec.response_template:
        responses = [render(spec.response_template, row) for row in rows]
        if is_closed_set(responses):
            return responses
    return None


def render(template: str, row: dict) -> str:
    return template.format(**row)


def _check_fields(spec: DataSpec, rows: datasets.Dataset) -> None:
    columns = rows.column_names
    if spec.conversational:
        chat.require_format(columns)
    for key in ("prompt_template", "response_template", "text_template"):
        for column in template_fields(getattr(spec, key) or "", f"data.{key}"):
            if column not in columns:
                raise InputError(
                    f"data.{key} must use columns the data has, but got field "
                    f"{{{column}}}; the columns are {', '.join(columns)}."
                )
    if spec.label_column and spec.label_column not in columns:
        raise InputError(
            f"data.label_column must be a column of the data, but got "
            f"label_column={spec.label_column!r}; the columns are {', '.join(columns)}. "
            "Set label_column: null for token F1."
        )


def tokenize(
    spec: DataSpec,
    train_rows: datasets.Dataset,
    eval_rows: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
) -> TaskData:
    """Tokenize both splits once; every trial of a worker reuses the result."""
    eos = tokenizer.eos_token_id

    # Only the first max_length tokens of an example are kept: a text many times longer than that
    # many tokens can hold is cut before it is tokenized, so a row of megabytes costs no more than
    # a long one.
    longest = spec.max_length * MAX_CHARS_PER_TOKEN
    templates = _prompt_and_response(spec)

    if spec.conversational and len(train_rows) + len(eval_rows):
        sample = train_rows[0] if len(train_rows) else eval_rows[0]
        chat.require_chat_template(tokenizer, chat.require_format(train_rows.column_names), sample)

    def encode(row: dict) -> dict:
        if spec.conversational:
            return chat.encode(row, tokenizer, spec.max_length)
        if spec.text_template is not None:
            ids = tokenizer(render(spec.text_template, row)[:longest])["input_ids"] + [eos]
            ids = ids[: spec.max_length]
            return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}
        if templates is None:  # DataSpec allows no other case; said for the type checker
            raise InputError("data must give prompt_template and response_template together")
        prompt = tokenizer(render(templates[0], row)[:longest])["input_ids"]
        response = tokenizer(render(templates[1], row)[:longest], add_special_tokens=False)["input_ids"] + [
            eos
        ]
        ids = (prompt + response)[: spec.max_length]
        labels = ([-100] * len(prompt) + response)[: spec.max_length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    train = train_rows.map(encode, remove_columns=train_rows.column_names, desc="tokenize train")
    eval_ = eval_rows.map(encode, remove_columns=eval_rows.column_names, desc="tokenize eval")
    lost = {}
    for name, split in (("train", train), ("eval", eval_)):
        if len(split) == 0:  # (hand-over tokenizes the eval split alone)
            continue
        lost[name] = sum(1 for labels in split["labels"] if max(labels, default=-100) == -100)
        if lost[name] == len(split):
            raise InputError(
                f"data.max_length must leave room for the responses, but got max_length={spec.max_length}, "
                f"which the prompts alone fill in all {len(split)} {name} rows. Raise data.max_length, "
                "or shorten the prompts."
            )
    if spec.conversational:
        pairs = [chat.prompt_and_reference(row, tokenizer) for row in eval_rows]
        prompts, references = [p[-longest:] for p, _ in pairs], [r for _, r in pairs]
    elif templates is not None:  # spec.has_prompts
        # Generation keeps a prompt's last max_length tokens (where the cue to answer is): its end.
        prompts = [render(templates[0], row)[-longest:] for row in eval_rows]
        references = [render(templates[1], row).strip() for row in eval_rows]
    else:
        prompts, references = [], []
    labels = (
        [str(v) for v in eval_rows[spec.label_column]] if spec.label_column and spec.has_prompts else None
    )
    split = spec.text_split
    stop = split.end if split is not None and split.end else None
    return TaskData(train, eval_, prompts, references, labels, lost_responses=lost, eval_stop=stop)


def _prompt_and_response(spec: DataSpec) -> tuple[str, str] | None:
    """The templates that split an example into prompt and response: the two given, or a
    text_template's text before its last field and that field; None for rows of turns, or a
    text_template that does not end in a field."""
    split = spec.text_split
    if split is not None:
        return split.prompt_template, "{" + split.field + "}"
    if spec.prompt_template is not None and spec.response_template is not None:
        return spec.prompt_template, spec.response_template
    return None
