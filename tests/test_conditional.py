"""Conditional parameters (`when:`): sampled parents first through define-by-run, an inactive
parameter never suggested nor recorded, and a real sweep of the shipped conditional space."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from lorasweep.search import load_sweep
from lorasweep.search.cli import main
from lorasweep.search.objective import _evaluated_twin
from lorasweep.search.strategy import make_sampler

from .conftest import ROOT

# The child is written before its parent: sampling order comes from the conditions, not the file.
SPACE = """\
study: {{sampler: {sampler}}}
search_space:
  lora_dropout: {{type: float, low: 0.0, high: 0.2, step: 0.1, when: {{use_dora: false}}}}
  use_dora: {{type: choice, values: [true, false]}}
  lora_r: {{type: choice, values: [4, 8]}}
"""


def _space(write, sampler: str = "{type: random, seed: 0}"):
    return load_sweep(write(SPACE.format(sampler=sampler)))


def _study(sweep, n: int) -> optuna.Study:
    """n trials of a real in-memory study that sample the space as the objective does."""
    study = optuna.create_study(sampler=make_sampler(sweep.study, sweep.space))
    study.optimize(lambda t: float(len(sweep.space.sample(t))), n_trials=n)
    return study


def test_parents_come_first_and_an_inactive_parameter_is_never_suggested(write):
    sweep = _space(write)
    assert list(sweep.space.distributions) == ["use_dora", "lora_dropout", "lora_r"]
    study = _study(sweep, 8)
    for trial in study.trials:
        assert ("lora_dropout" in trial.params) == (trial.params["use_dora"] is False), trial.params
        assert ("lora_dropout" in trial.distributions) == ("lora_dropout" in trial.params)
    assert {t.params["use_dora"] for t in study.trials} == {True, False}  # both branches ran


def test_resolve_leaves_an_inactive_parameter_to_the_library(write):
    sweep = _space(write)
    assert sweep.fixed["lora_dropout"] == 0.05  # lorasweep's default for a parameter nobody searches
    dora = sweep.space.resolve({"use_dora": True, "lora_dropout": 0.1, "lora_r": 4}, sweep.fixed)
    assert "lora_dropout" not in dora and dora["use_dora"] is True and dora["r"] == 4
    plain = sweep.space.resolve({"use_dora": False, "lora_dropout": 0.1, "lora_r": 4}, sweep.fixed)
    assert plain["lora_dropout"] == 0.1


def test_a_chain_of_conditions_switches_off_together(write):
    sweep = load_sweep(
        write("""
search_space:
  warmup_steps: {type: int, low: 0, high: 4, when: {lora_r: 8}}
  lora_r: {type: choice, values: [4, 8], when: {use_dora: false}}
  use_dora: {type: choice, values: [true, false]}
  lora_alpha: {per_rank: {type: choice, values: [1, 2], when: {use_dora: false}}}
""")
    )
    space = sweep.space
    assert list(space.distributions) == ["use_dora", "lora_r", "warmup_steps", "lora_alpha_per_rank"]
    # use_dora switches lora_r off, and with it warmup_steps (whose parent then has no value)
    params = space.resolve({"use_dora": True, "lora_r": 8, "warmup_steps": 2, "lora_alpha_per_rank": 2}, {})
    assert params == {"use_dora": True}  # no r, no warmup_steps, no lora_alpha: the libraries' defaults
    params = space.resolve({"use_dora": False, "lora_r": 8, "warmup_steps": 2, "lora_alpha_per_rank": 2}, {})
    assert params == {"use_dora": False, "r": 8, "warmup_steps": 2, "lora_alpha": 16}
    assert space.condition_text("warmup_steps") == "when lora_r = 8"
    assert space.condition_text("lora_alpha_per_rank") == "when use_dora = false"


def test_size_counts_only_valid_configurations(write):
    space = _space(write).space
    # use_dora true: 2 ranks; false: 3 dropouts x 2 ranks. A product of the grids would say 12.
    assert space.size() == 8
    configurations = space.configurations()
    assert len(configurations) == 8
    assert len({tuple(sorted(c.items())) for c in configurations}) == 8
    assert {"use_dora": True, "lora_r": 4} in configurations


def test_a_finite_conditional_space_is_exhausted_without_a_repeat(write):
    sweep = _space(write)
    study = _study(sweep, 8)
    drawn = {tuple(sorted(t.params.items())) for t in study.trials}
    assert len(drawn) == 8  # every configuration once: none differs only in a parameter left out
    assert study.sampler.is_exhausted(study)


def test_the_duplicate_check_compares_active_parameters_only(write):
    sweep = _space(write)
    study = optuna.create_study()
    study.enqueue_trial({"use_dora": True, "lora_dropout": 0.1, "lora_r": 4})
    study.optimize(lambda t: float(len(sweep.space.sample(t))), n_trials=1)
    assert study.trials[0].params == {"use_dora": True, "lora_r": 4}  # the queued dropout was never asked

    def twin_of(params: dict) -> int | None:
        study.enqueue_trial(params)
        trial = study.ask()
        sweep.space.sample(trial)
        twin = _evaluated_twin(trial)
        study.tell(trial, 0.0)
        return twin and twin.number

    assert (
        twin_of({"use_dora": True, "lora_dropout": 0.2, "lora_r": 4}) == 0
    )  # differs only in an inactive one
    assert twin_of({"use_dora": False, "lora_dropout": 0.1, "lora_r": 4}) is None  # another active set


def test_tpe_models_the_groups_of_a_conditional_space(write):
    tpe = "{type: tpe, seed: 0, n_startup_trials: 2}"
    sweep = _space(write, tpe)
    assert sweep.study.sampler_options == {"multivariate": True, "group": True, "n_startup_trials": 2}
    made = make_sampler(sweep.study, sweep.space)._make(0)  # what FreshSampler draws each trial with
    assert isinstance(made, optuna.samplers.TPESampler) and made._multivariate and made._group
    own = _space(write, "{type: tpe, multivariate: false}").study.sampler_options
    assert own == {"multivariate": False}  # the file's choice wins
    flat = load_sweep(write("search_space:\n  lora_r: {type: choice, values: [4, 8]}\n"))
    assert flat.study.sampler_options == {}  # no conditions: Optuna's defaults


# -- a real sweep of the shipped conditional space, shortened -----------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory, _empty_mlflow_db):
    """spaces/conditional.yaml with 4 trials of 4 steps on a few rows (its space and conditions as
    shipped)."""
    sweep = yaml.safe_load((ROOT / "spaces" / "conditional.yaml").read_text(encoding="utf-8"))
    sweep["study"].update(n_trials=4, pruner=None)
    sweep["data"].update(train_split="train[:200]", max_eval_rows=32)
    sweep["train"].update(
        max_steps=4, eval_steps=4, logging_steps=2, warmup_steps=0, per_device_train_batch_size=8
    )
    sweep["eval"].update(max_samples=8, max_new_tokens=8)
    folder = tmp_path_factory.mktemp("conditional")
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep), encoding="utf-8")
    (folder / "mlruns").mkdir()
    shutil.copy(_empty_mlflow_db, folder / "mlruns" / "mlflow.db")  # its schema made once per session
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert main(["-q", "run", "sweep.yaml", "--no-system-metrics"]) == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "mlruns" / "optuna.journal"))
    )
    study = optuna.load_study(study_name="conditional", storage=storage)
    return folder, study, MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")


def test_a_sweep_records_no_inactive_parameter(swept, monkeypatch, capsys):
    folder, study, client = swept
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    adam = [t for t in trials if t.params["optim"] == "adamw_torch"]
    sgd = [t for t in trials if t.params["optim"] == "sgd"]
    assert adam and sgd  # the seed samples both branches
    for trial in trials:
        params = client.get_run(trial.user_attrs["mlflow_run_id"]).data.params
        assert ("adam_beta2" in params) == (trial in adam) == ("adam_beta2" in trial.params)
        if trial in adam:  # the enabling value: sampled, recorded, trained with
            assert float(params["adam_beta2"]) == pytest.approx(trial.params["adam_beta2"])

    monkeypatch.chdir(folder)
    assert main(["trials", "--json"]) == 0
    listed = {t["number"]: t["params"] for t in json.loads(capsys.readouterr().out)}
    assert all(("adam_beta2" in listed[t.number]) == (t in adam) for t in trials)  # absent: no key

    assert main(["trials", "--csv"]) == 0
    rows = {int(r["number"]): r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert all((rows[t.number]["param.adam_beta2"] == "") == (t in sgd) for t in trials)  # empty cell

    assert main(["trials"]) == 0
    table = capsys.readouterr().out.splitlines()
    column = table[0].split().index("adam_beta2")
    assert all(
        line.split()[column] == "-" for line in table[1:] if int(line.split()[0]) in {t.number for t in sgd}
    )


def test_the_dataframe_and_compare_show_an_inactive_parameter_as_absent(swept, monkeypatch, capsys):
    import lorasweep

    folder, study, _ = swept
    sgd = next(t.number for t in study.trials if t.params["optim"] == "sgd")
    adam = next(t.number for t in study.trials if t.params["optim"] == "adamw_torch")
    monkeypatch.chdir(folder)
    frame = lorasweep.trials("conditional")
    assert math.isnan(frame.loc[sgd, "param.adam_beta2"]) and not math.isnan(
        frame.loc[adam, "param.adam_beta2"]
    )
    assert main(["compare", str(adam), str(sgd)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "adam_beta2" in x)
    assert line.startswith("≠") and line.split()[-1] == "-"
