"""The sweep file's JSON Schema and reference page: generated from the models, committed, and true
to every shipped sweep file."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from lorasweep.search.sweepfile import json_schema, reference_markdown
from lorasweep.search.sweepfile._yaml import load_yaml

ROOT = Path(__file__).resolve().parent.parent
SPACES = sorted((ROOT / "spaces").glob("*.yaml"))
REGENERATE = "Run: python -m lorasweep.search.sweepfile"


def _validator() -> jsonschema.protocols.Validator:
    schema = json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_every_shipped_sweep_file_validates_against_the_schema(path):
    data, _, _ = load_yaml(path)
    errors = [e.message for e in _validator().iter_errors(data)]
    assert not errors, errors


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("study: {sampler: bayes}\n", "'bayes'"),
        ("search_space:\n  lora_r: {type: loguniform, low: 1, high: 2}\n", "lora_r"),
        ("promote: {precisions: [fp16]}\n", "'fp16'"),
        ("model: {bse: x}\n", "'bse'"),
        ("stdy: {name: x}\n", "'stdy'"),
        ("data: {max_length: 0}\n", "0"),
    ],
)
def test_a_broken_file_fails_the_schema(tmp_path, text, fragment):
    data, _, _ = load_yaml(tmp_path / "sweep.yaml", text)
    errors = [str(e) for e in _validator().iter_errors(data)]
    assert errors and any(fragment in e for e in errors), errors


def test_the_committed_schema_is_the_models():
    committed = json.loads((ROOT / "spaces" / "sweep-file.schema.json").read_text(encoding="utf-8"))
    assert committed == json_schema(), REGENERATE


def test_the_committed_reference_is_the_models():
    committed = (ROOT / "docs" / "reference" / "sweep-file.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(), REGENERATE


def test_the_reference_names_every_metric_and_section():
    from lorasweep.objectives import METRICS
    from lorasweep.search.sweepfile._models import SECTIONS

    page = reference_markdown()
    assert all(m in page for m in METRICS)  # the README's hand table left out bleu and accuracy
    assert all(f"\n## {s}\n" in page for s in SECTIONS)


def test_every_shipped_sweep_file_names_the_schema_first():
    for path in SPACES:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=./sweep-file.schema.json", path
