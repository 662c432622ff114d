"""The study side without training: samplers, the space, storage. Stub objectives only."""

from __future__ import annotations

import itertools

import optuna
import pytest

from lorasweep.search import UserError, load_sweep
from lorasweep.search.storage import load_study, open_storage
from lorasweep.search.strategy import make_sampler
from lorasweep.search.urls import redact, tracking_uri

SPACE = """\
search_space:
  learning_rate: {type: float, low: 0.001, high: 0.002, step: 0.001}
  lora_r: {type: choice, values: [4, 8]}
  lora_alpha: {per_rank: {type: choice, values: [1, 2]}}
"""


def _sampled(sweep, n: int) -> list[dict]:
    study = optuna.create_study(
        sampler=make_sampler(sweep.study, sweep.space), directions=list(sweep.study.directions)
    )
    seen = []
    study.optimize(
        lambda t: seen.append(sweep.space.resolve(sweep.space.sample(t), sweep.fixed)) or 0.0, n_trials=n
    )
    return seen


def test_grid_sampler_visits_every_point_once(write):
    sweep = load_sweep(write("study: {sampler: grid}\n" + SPACE))
    seen = _sampled(sweep, sweep.space.size())
    visited = {(p["learning_rate"], p["r"], p["lora_alpha"]) for p in seen}
    expected = {(lr, r, k * r) for lr, r, k in itertools.product([0.001, 0.002], [4, 8], [1, 2])}
    assert visited == expected


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "nsgaii", "gp"])
def test_every_sampler_is_seeded(write, sampler):
    sweep = load_sweep(write(f"study: {{sampler: {{type: {sampler}, seed: 5}}}}\n" + SPACE))
    assert _sampled(sweep, 4) == _sampled(sweep, 4)


def test_storage_default_is_a_journal_under_mlruns(in_tmp):
    storage = open_storage(None)
    optuna.create_study(study_name="s", storage=storage)
    assert (in_tmp / "mlruns" / "optuna.journal").is_file()
    assert load_study(None, None).study_name == "s"  # the only study needs no name


def test_load_study_names_the_studies_it_has(in_tmp):
    storage = open_storage(None)
    for name in ("a", "b"):
        optuna.create_study(study_name=name, storage=storage)
    with pytest.raises(UserError, match=r"--study must name a study.*Studies: a, b"):
        load_study(None, None)
    with pytest.raises(UserError, match="study='c'"):
        load_study("c", None)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:s3cret@db:5432/optuna", "postgresql://user:***@db:5432/optuna"),
        ("sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db"),
        ("postgresql://user@db/optuna", "postgresql://user@db/optuna"),  # a user name is no secret
        ("https://ghp_s3cret@mlflow.example.com", "https://***@mlflow.example.com"),  # a token is
        (
            "postgresql://u@h/db?password=s3cret&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("https://h/store?X-Amz-Signature=s3cret&v=1", "https://h/store?X-Amz-Signature=***&v=1"),
        ("http://h:5000/?api_key=s3cret;token=s3cret", "http://h:5000/?api_key=***;token=***"),
    ],
)
def test_passwords_and_tokens_in_urls_are_never_printed(url, shown):
    assert redact(url) == shown and "s3cret" not in shown


def test_tracking_uri_precedence(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None, None) == "sqlite:///mlruns/mlflow.db"
    assert tracking_uri(None, "http://file:5000") == "http://file:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking_uri(None, "http://file:5000") == "http://env:5000"
    assert tracking_uri("http://flag:5000", "http://file:5000") == "http://flag:5000"


def test_listing_without_a_storage_writes_nothing(in_tmp):
    with pytest.raises(UserError, match=r"storage must exist.*lorasweep run"):
        load_study(None, None)
    assert not (in_tmp / "mlruns").exists()
