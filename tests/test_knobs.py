"""The libraries' knobs kept as data: a sweep file's parameters are checked without importing torch
once the installed versions' answers are known, and the kept answers are the libraries' own."""

from __future__ import annotations

import subprocess
import sys
import typing

from lorasweep.objectives import _knobs
from lorasweep.objectives._typing import check_type

SAMPLES = [0, 3, -1, 1.5, "x", "steps", "linear", True, None, ["q_proj"], [], {"a": 1}, 1e-3]


def test_kept_hints_accept_and_refuse_what_the_libraries_hints_do():
    import peft
    import transformers

    for cls in (transformers.TrainingArguments, peft.LoraConfig, transformers.EarlyStoppingCallback.__init__):
        for name, hint in typing.get_type_hints(cls).items():
            kept = _knobs.decode(_knobs.encode(hint))
            for value in SAMPLES:
                assert check_type(value, kept)[0] == check_type(value, hint)[0], (name, hint, value)


def test_a_verdict_is_asked_once_per_set_of_values(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASWEEP_CACHE", str(tmp_path))
    asked = []

    def judge(values):
        asked.append(values)
        return [f"no {values['lora_dropout']}"] if values["lora_dropout"] > 1 else []

    for values in ({"lora_dropout": 2}, {"lora_dropout": 0.1}, {"lora_dropout": 2}, {"lora_dropout": 0.1}):
        verdict = _knobs.verdict(values, lambda v=values: judge(v))
        assert verdict == (["no 2"] if values["lora_dropout"] == 2 else [])
    assert asked == [{"lora_dropout": 2}, {"lora_dropout": 0.1}]  # the repeats came from the cache


_CHECK = """
import sys
from lorasweep.search import SweepError, load_sweep
try:
    load_sweep(sys.argv[1])
    print("ok", end=" ")
except SweepError as e:
    print("refused:", str(e).splitlines()[0], end=" ")
print(sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules))
"""


def _check(folder, cache, sweep) -> str:
    env = {"LORASWEEP_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-P", "-c", _CHECK, str(sweep)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_known_file_is_checked_without_torch_and_bad_values_are_still_refused(tmp_path, write):
    good = write("train: {max_steps: 20, lora_dropout: 0.1, lr_scheduler_type: cosine}\n", "good.yaml")
    assert _check(tmp_path, tmp_path / "cache", good) == "ok ['peft', 'torch', 'transformers']"  # cold
    assert _check(tmp_path, tmp_path / "cache", good) == "ok []"  # the same file: known answers
    # Names and types never need the libraries once their fields are known; a new set of values
    # does ask them (and its verdict is then kept).
    typo = write(
        "train: {max_steps: 20, lora_dropout: 0.1, lr_scheduler_type: cosine, max_step: 20}\n", "typo.yaml"
    )
    assert _check(tmp_path, tmp_path / "cache", typo).endswith("[]")
    assert "max_step" in _check(tmp_path, tmp_path / "cache", typo)
    wrong_type = write("train: {max_steps: twenty}\n", "type.yaml")
    assert "must be an integer" in _check(tmp_path, tmp_path / "cache", wrong_type)
    bad_value = write("train: {lr_scheduler_type: sometimes}\n", "value.yaml")
    first_look = _check(tmp_path, tmp_path / "cache", bad_value)
    assert "sometimes" in first_look and "torch" in first_look
    assert _check(tmp_path, tmp_path / "cache", bad_value) == first_look.replace(
        "['peft', 'torch', 'transformers']", "[]"
    )


def test_a_cache_file_of_another_shape_is_rebuilt(tmp_path, monkeypatch):
    """Valid JSON that is not what lorasweep wrote (`{}`, a list, a field list of numbers) is
    recomputed and written anew, as truncated JSON is."""
    import json

    monkeypatch.setenv("LORASWEEP_CACHE", str(tmp_path))
    fresh = {"training": ["max_steps"], "lora": ["r"], "early": [], "hints": {"max_steps": "int"}}
    table, verdicts = tmp_path / f"{_knobs._stem()}.json", tmp_path / f"{_knobs._stem()}-verdicts.json"
    for stored in ({}, [], {"training": 3, "lora": [], "early": [], "hints": {}}, "x", None):
        table.write_text(json.dumps(stored), encoding="utf-8")
        assert _knobs.table(lambda: dict(fresh)) == fresh  # a new function: not @cache's answer
        assert json.loads(table.read_text(encoding="utf-8")) == fresh
        verdicts.write_text(json.dumps(stored if stored != {} else {"k": 1}), encoding="utf-8")
        assert _knobs.verdict({"r": 4}, lambda: ["no"]) == ["no"]
        assert list(json.loads(verdicts.read_text(encoding="utf-8")).values()) == [["no"]]
