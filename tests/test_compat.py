"""A study and a registered model written by lorasweep 0.1 still work with this code.

tests/fixtures/study_0_1 is what the 0.1 code (commit 1156f0f, when the packages were the top-level
`search` and `objectives`) left in a folder after `python -m search run sweep.yaml` and
`python -m search promote --trial 0`: made by tests/fixtures/make_study_0_1.py, whose docstring says
how to run it again. It holds

    sweep.yaml                 study `compat`: grid (seed 1) over lora_r x learning_rate, budget 3,
                               a threshold pruner, model.base `base` (relative: run from the folder)
    base/                      a micro random-init Llama (127k parameters) with the tiny base's tokenizer
    mlruns/optuna.journal      the Optuna study: trials 0 and 1 COMPLETE, trial 2 PRUNED at step 5
    mlruns/mlflow.db           MLflow: the parent run, a nested run per trial, registered model
                               `compat` version 1 (trial 0) with alias `champion`
    mlruns/artifacts/          the trials' adapters and generations, version 1's pyfunc and fp32 ONNX
    old_trials.json            the 0.1 code's `trials --json` and `best --json`, for comparison
    old_best.json

Absolute paths of the folder it was made in (MLflow artifact locations, the version's source, the
study's sweep_path) are stored as @FIXTURE_ROOT@; the `old_study` fixture puts the copy's own path
back. The 0.1 formats must keep working: do not regenerate the fixture with newer code.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow import MlflowClient

from lorasweep.search.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "study_0_1"
PLACEHOLDER = "@FIXTURE_ROOT@"
STUDY = "compat"
PARENT_ATTR = "mlflow_parent_run_id"  # the study's user attribute naming its MLflow parent run
# What the 0.1 sweep made (see make_study_0_1.py): (state, params) of trials 0, 1, 2.
OLD_TRIALS = [
    ("COMPLETE", {"lora_r": 8, "learning_rate": 0.01}),
    ("COMPLETE", {"lora_r": 4, "learning_rate": 0.01}),
    ("PRUNED", {"lora_r": 4, "learning_rate": 1e-6}),
]


def _replace_in_db(db: Path, old: str, new: str) -> int:
    """`old` -> `new` in every text value of every table, as make_study_0_1.py did the other way."""
    changed = 0
    con = sqlite3.connect(db)
    with con:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for column in [r[1] for r in con.execute(f'PRAGMA table_info("{table}")').fetchall()]:
                changed += con.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                    (old, new, old),
                ).rowcount
    con.close()
    return changed


@pytest.fixture
def old_study(tmp_path, monkeypatch) -> Path:
    """A copy of the 0.1 fixture with its own absolute path filled in, as the current folder."""
    root = (tmp_path / "study_0_1").resolve()
    shutil.copytree(FIXTURE, root)
    assert _replace_in_db(root / "mlruns" / "mlflow.db", PLACEHOLDER, str(root)) >= 8
    journal = root / "mlruns" / "optuna.journal"
    text = journal.read_text(encoding="utf-8")
    assert PLACEHOLDER in text
    journal.write_text(text.replace(PLACEHOLDER, str(root)), encoding="utf-8")
    monkeypatch.chdir(root)
    return root


def _uri(root: Path) -> str:
    return f"sqlite:///{root}/mlruns/mlflow.db"


def _study(root: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "mlruns" / "optuna.journal"))
    )
    return optuna.load_study(study_name=STUDY, storage=storage)


def _old(root: Path, name: str):
    return json.loads((root / name).read_text(encoding="utf-8"))


def test_trials_lists_the_old_trials(old_study, capsys):
    assert main(["trials", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["number"], r["state"], r["params"]) for r in rows] == [
        (n, state, params) for n, (state, params) in enumerate(OLD_TRIALS)
    ]
    old = {r["number"]: r for r in _old(old_study, "old_trials.json")}
    for row in rows:
        before = old[row["number"]]
        for key in ("state", "params", "values", "metrics", "mlflow_run_id", "duration_s", "notes"):
            assert row[key] == before[key], (row["number"], key)
    assert rows[2]["notes"] == {"pruned_step": 5} and rows[2]["values"] is None
    assert rows[0]["metrics"]["eval_loss"] == pytest.approx(rows[0]["values"][0])
    assert set(rows[0]["metrics"]) >= {"eval_loss", "eval_perplexity", "rougeL", "f1", "exact_match"}

    # Every trial's run id names a run of the old MLflow store, nested under the study's parent.
    client = MlflowClient(_uri(old_study))
    parent = _study(old_study).user_attrs[PARENT_ATTR]
    for row in rows:
        run = client.get_run(row["mlflow_run_id"])
        assert run.data.tags["lorasweep.trial_number"] == str(row["number"])
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.info.artifact_uri.startswith((old_study / "mlruns" / "artifacts").as_uri())
    run0 = client.get_run(rows[0]["mlflow_run_id"])
    assert run0.data.metrics["eval_loss"] == pytest.approx(rows[0]["metrics"]["eval_loss"])
    assert "adapter" in {a.path for a in client.list_artifacts(run0.info.run_id)}


def test_best_names_the_old_best_trial(old_study, capsys):
    old = _old(old_study, "old_best.json")["selected"]
    assert old["number"] == 0  # trial 0: eval_loss 5.774 beats trial 1's 5.803
    run_id = old["mlflow_run_id"]

    assert main(["best"]) == 0
    out = capsys.readouterr().out
    assert f"selected: trial {old['number']} eval_loss=" in out
    assert f"mlflow run {run_id}; its adapter: runs:/{run_id}/adapter" in out

    assert main(["best", "--json"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert new["selected"]["number"] == old["number"]
    assert new["selected"]["values"] == old["values"]
    assert new["selected"]["mlflow_run_id"] == run_id


def test_resume_adds_a_trial_under_the_old_parent_run(old_study):
    before = _study(old_study)
    parent = before.user_attrs[PARENT_ATTR]
    old_run_ids = [t.user_attrs["mlflow_run_id"] for t in before.trials]

    assert main(["-q", "resume", STUDY, "--trials", "4"]) == 0

    study = _study(old_study)
    trials = study.trials
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert len(trials) == 4 and all(t.state in finished for t in trials)
    assert [t.state.name for t in trials[:3]] == [state for state, _ in OLD_TRIALS]
    assert [t.user_attrs["mlflow_run_id"] for t in trials[:3]] == old_run_ids
    new = trials[3]
    # The grid's last unvisited point that seed 1 draws; lr 1e-2 learns, so it is not pruned.
    assert new.params == {"lora_r": 2, "learning_rate": 0.01}
    assert new.state == optuna.trial.TrialState.COMPLETE and new.value < 6.4
    assert study.user_attrs[PARENT_ATTR] == parent  # re-attached, not replaced
    # A 0.1 study had no id: it gets one now, and its old parent run is tagged with it.
    assert (
        MlflowClient(_uri(old_study)).get_run(parent).data.tags["lorasweep.study_id"]
        == (study.user_attrs["study_id"])
    )
    assert study.best_trial.number in (0, 3)

    client = MlflowClient(_uri(old_study))
    run = client.get_run(new.user_attrs["mlflow_run_id"])
    assert run.info.run_id not in old_run_ids
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["lorasweep.trial_number"] == "3"
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((old_study / "mlruns" / "artifacts").as_uri())
    assert "adapter" in {a.path for a in client.list_artifacts(run.info.run_id)}
    experiment = client.get_experiment_by_name(STUDY)
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`lorasweep.role` = 'study'")
    assert [r.info.run_id for r in parents] == [parent]
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert sorted(r.info.run_id for r in children) == sorted([*old_run_ids, run.info.run_id])


def test_the_old_champion_loads_and_generates(old_study, monkeypatch):
    uri = _uri(old_study)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # A tracking URI set in-process (mlflow.set_tracking_uri) would win over the environment.
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)
    trial0 = _study(old_study).trials[0]
    version = MlflowClient(uri).get_model_version_by_alias(STUDY, "champion")
    assert str(version.version) == "1" and version.run_id == trial0.user_attrs["mlflow_run_id"]

    model = mlflow.pyfunc.load_model(f"models:/{STUDY}@champion")
    out = model.predict(["Phrase: great\nTone:"], params={"max_new_tokens": 4})
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], str)

    # The same base + adapter that trial 0 scored: its logged generations come back, batched as then.
    table = json.loads(
        Path(
            MlflowClient(uri).download_artifacts(version.run_id, "generations.json", str(old_study))
        ).read_text(encoding="utf-8")
    )
    prompts = [row[0] for row in table["data"]]
    assert model.predict(prompts, params={"max_new_tokens": 4}) == [row[2] for row in table["data"]]


def test_promoting_another_trial_moves_the_old_champion(old_study, capsys):
    client = MlflowClient(_uri(old_study))
    study = _study(old_study)
    v1 = client.get_model_version(STUDY, "1")
    assert v1.tags["lorasweep.trial_number"] == "0" and v1.tags["lorasweep.gate"] == "passed"

    assert main(["promote", "--trial", "1"]) == 0
    out = capsys.readouterr().out
    assert "parity gate: passed" in out
    assert f"registered: {STUDY} version 2 (trial 1)" in out
    assert f"champion: models:/{STUDY}@champion -> version 2 (was version 1)" in out

    champion = client.get_model_version_by_alias(STUDY, "champion")
    assert str(champion.version) == "2"
    assert champion.run_id == study.trials[1].user_attrs["mlflow_run_id"]
    assert champion.tags["lorasweep.trial_number"] == "1"
    assert champion.tags["param.lora_r"] == "4"
    assert client.get_run(champion.run_id).data.tags["lorasweep.registered_as"] == f"{STUDY}/2"
    assert (old_study / "exports" / STUDY / "v2" / "fp32" / "genai_config.json").is_file()

    after = client.get_model_version(STUDY, "1")
    assert after.tags == v1.tags and after.source == v1.source and after.run_id == v1.run_id
    assert after.aliases == []
    assert [str(v.version) for v in client.search_model_versions(f"name = '{STUDY}'")] in (
        ["2", "1"],
        ["1", "2"],
    )
