"""Hand over only what was trained, move only what the study owns: the adapter hashes and base
identity a trial records, promote's and export's checks of them, the gate's eval-loss check, the
champion of another study, exports folders that already exist, and promotes that take turns.

Trains two short trials once per module (about 20 s); most tests stop before any export.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from filelock import FileLock
from mlflow import MlflowClient
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from safetensors.torch import load_file, save_file

from lorasweep.search.cli import main

SWEEP = """\
study: {name: owned, metric: eval_loss, sampler: {type: grid, seed: 0}, n_trials: 2}
data: {train_split: "train[:400]", eval_split: "train[1400:1460]"}
train: {max_steps: 20, eval_steps: 10, logging_steps: 10, per_device_train_batch_size: 16, r: 8}
eval: {max_samples: 8, max_new_tokens: 8, log_samples: 8}
promote: {model_name: tone, precisions: [fp32]}
search_space:
  learning_rate: {type: choice, values: [0.005, 0.01]}
"""
HEX = "[0-9a-f]{64}"


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("handover")
    (folder / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        assert main(["-q", "run", "sweep.yaml"]) == 0
    return folder


@pytest.fixture
def client(swept, monkeypatch) -> MlflowClient:
    monkeypatch.chdir(swept)
    return MlflowClient(f"sqlite:///{swept}/mlruns/mlflow.db")


def _run_id(folder: Path, trial: int) -> str:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "mlruns" / "optuna.journal"))
    )
    return optuna.load_study(study_name="owned", storage=storage).trials[trial].user_attrs["mlflow_run_id"]


def _adapter_weights(client: MlflowClient, run_id: str) -> Path:
    repository = get_artifact_repository(client.get_run(run_id).info.artifact_uri)
    return Path(repository.artifact_dir) / "adapter" / "adapter_model.safetensors"


def _versions(client: MlflowClient) -> set[str]:
    """The versions of `tone` now: tests share one store and run in any order, so each compares
    with what was there before it."""
    return {v.version for v in client.search_model_versions("name = 'tone'")}


def _registered(client: MlflowClient) -> None:
    if not client.search_registered_models(filter_string="name = 'tone'"):
        client.create_registered_model("tone")


@pytest.fixture
def altered(swept, client):
    """Trial 0's logged adapter with every lora_B negated (put back afterwards)."""
    path = _adapter_weights(client, _run_id(swept, 0))
    original = path.read_bytes()
    tensors = load_file(path)
    save_file({k: -v if ".lora_B." in k else v for k, v in tensors.items()}, path)
    yield path
    path.write_bytes(original)


def test_a_trial_records_each_adapter_file_s_hash_and_its_base(swept, client):
    from lorasweep.objectives import base_identity
    from lorasweep.search.provenance import adapter_sha256

    tags = client.get_run(_run_id(swept, 0)).data.tags
    lines = [v for k, v in tags.items() if k.startswith("lorasweep.adapter_sha256.")]
    assert all(re.fullmatch(f"{HEX}  \\S.*", line) for line in lines), lines  # sha256sum's lines
    recorded = {line.partition("  ")[2]: line.partition("  ")[0] for line in lines}
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(recorded)
    weights = _adapter_weights(client, _run_id(swept, 0))
    assert recorded == adapter_sha256(weights.parent)
    assert tags["lorasweep.base"] == base_identity("tiny")
    assert re.fullmatch(f"tiny sha256:{HEX}", tags["lorasweep.base"])


@pytest.mark.parametrize(
    "command",
    [
        ["promote", "--trial", "0"],
        ["export", "--trial", "0", "--out", "single"],
        ["export", "--trial", "0", "--trial", "1", "--out", "bundle"],
    ],
    ids=["promote", "export", "bundle"],
)
def test_an_altered_adapter_is_refused_before_anything_is_exported(swept, client, altered, capsys, command):
    before, folders = _versions(client), _folders(swept)
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1  # one line, no traceback
    assert re.search(
        f"trial 0's adapter/adapter_model.safetensors must have the SHA-256 its run recorded when the trial "
        f"logged it, but got sha256=({HEX}) \\(recorded sha256=({HEX})\\): the file changed after training",
        err,
    ), err
    assert _versions(client) == before
    assert _folders(swept) == folders  # not even an empty exports/owned


def _folders(project: Path) -> list[Path]:
    """The project's folders outside the stores."""
    return sorted(
        p for p in project.rglob("*") if p.is_dir() and "mlruns" not in p.relative_to(project).parts
    )


def test_an_added_file_is_refused_too(swept, client, capsys):
    extra = _adapter_weights(client, _run_id(swept, 1)).parent / "adapter_model.bin"
    extra.write_bytes(b"not what the trial logged")
    try:
        assert main(["export", "--trial", "1", "--out", "x"]) == 2
    finally:
        extra.unlink()
    assert "adapter/adapter_model.bin" in capsys.readouterr().err


def test_a_run_from_before_the_hashes_goes_on_with_a_note_and_the_gate_refuses_a_changed_model(
    swept, client, capsys
):
    """No hashes to check (a run logged by an older lorasweep) and every lora_B negated: the export
    goes on, and the gate finds that the rebuilt model does not give its trial's eval loss."""
    run_id = _run_id(swept, 1)
    tags = client.get_run(run_id).data.tags
    recorded = {k: v for k, v in tags.items() if k.startswith("lorasweep.adapter_")}
    path = _adapter_weights(client, run_id)
    original = path.read_bytes()
    save_file({k: -v if ".lora_B." in k else v for k, v in load_file(path).items()}, path)
    for key in recorded:
        client.delete_tag(run_id, key)
    try:
        assert main(["export", "--trial", "1", "--out", "old"]) == 1
    finally:
        path.write_bytes(original)
        for key, value in recorded.items():
            client.set_tag(run_id, key, value)
    out = capsys.readouterr().out
    assert "note: trial 1's run records no adapter hashes (it was logged before lorasweep kept them)" in out
    failed = r"pytorch: PyTorch eval loss must be within 1.0% of its trial's [\d.]+, but got"
    assert re.search(failed, out), out
    parity = json.loads((swept / "old" / "parity.json").read_text())
    assert not parity["passed"]
    assert [c["passed"] for c in parity["models"][0]["checks"] if c["name"] == "PyTorch eval loss"] == [False]


def test_a_base_that_is_not_the_one_trained_on_is_refused(swept, client, capsys):
    run_id = _run_id(swept, 1)
    recorded = client.get_run(run_id).data.tags["lorasweep.base"]
    client.set_tag(run_id, "lorasweep.base", "tiny sha256:" + "0" * 64)
    try:
        assert main(["export", "--trial", "1", "--out", "x"]) == 2
    finally:
        client.set_tag(run_id, "lorasweep.base", recorded)
    err = capsys.readouterr().err
    assert f"the base model must be the one trial 1 was trained on, but got base={recorded!r}" in err
    assert not (swept / "x").exists()


def test_a_champion_of_another_study_is_not_moved_without_force(swept, client, capsys):
    _registered(client)
    theirs = client.create_model_version(
        "tone",
        source=str(swept),
        tags={"lorasweep.study": "other", "lorasweep.study_id": "f" * 32, "lorasweep.trial_number": "4"},
    )
    client.set_registered_model_alias("tone", "champion", theirs.version)
    ours = str(int(theirs.version) + 1)  # the version the promote below registers
    kept = swept / "exports" / "tone" / f"v{ours}"  # an earlier registry's version of that number
    kept.mkdir(parents=True)
    (kept / "keep.txt").write_text("mine")
    before = _versions(client)

    assert main(["promote", "--trial", "0"]) == 2
    assert (
        "error: a promote must not move a champion promoted from another study, but got "
        f"models:/tone@champion=version {theirs.version}, from study 'other'; this is study 'owned'. "
        "Pass --force"
    ) in capsys.readouterr().err
    assert _versions(client) == before

    assert main(["promote", "--trial", "0", "--force"]) == 0
    out = capsys.readouterr().out
    assert f"note: exports/tone/v{ours} holds other exports" in out
    assert f"these go to exports/tone/v{ours}-2" in out
    assert f"champion: models:/tone@champion -> version {ours} (was version {theirs.version})" in out
    assert (kept / "keep.txt").read_text() == "mine"
    assert (kept.with_name(f"v{ours}-2") / "fp32" / "model.onnx").is_file()

    version = client.get_model_version("tone", ours)
    run_tags = client.get_run(_run_id(swept, 0)).data.tags
    for key, value in run_tags.items():  # the version carries what the trial recorded
        if key.startswith("lorasweep.adapter_sha256.") or key == "lorasweep.base":
            assert version.tags[key] == value
    assert version.tags["lorasweep.study"] == "owned" and len(version.tags["lorasweep.study_id"]) == 32

    # the rebuilt PyTorch model gave the trial's own eval loss, and parity.json says within what
    parity = json.loads((kept.with_name(f"v{ours}-2") / "parity.json").read_text())
    assert parity["max_eval_loss_change"] == 0.01 and parity["trial_eval_loss"] > 0
    check = next(c for c in parity["models"][0]["checks"] if c["name"] == "PyTorch eval loss")
    assert check["passed"] and "within 1.0% of its trial's" in check["limit"]
    assert "gated: PyTorch eval loss" in out


_WAITS = """
import sys
from lorasweep.search.cli import main
sys.exit(main(["promote", "--trial", "1", "--force"]))
"""


def test_a_promote_that_waited_its_turn_finds_the_other_one_s_version(swept, client):
    """Another promote of the same trial holds the lock; when it has registered that trial (here:
    by hand, its gate failed) and lets go, the waiting one says so and registers nothing."""
    _registered(client)
    lock = FileLock(str(swept / "mlruns" / ".promote-tone.lock"))
    lock.acquire()
    try:
        waiting = subprocess.Popen(
            [sys.executable, "-c", _WAITS],
            cwd=swept,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = waiting.stdout.readline()
        assert line.startswith("waiting: another promote to 'tone' is running"), line
        theirs = client.create_model_version(
            "tone", source=str(swept), run_id=_run_id(swept, 1), tags={"lorasweep.gate": "failed"}
        )
    finally:
        lock.release()
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err[-2000:]
    assert (
        f"trial 1 was registered by another promote while this one waited: version {theirs.version} of "
        "'tone', whose parity gate failed; the champion "
    ) in out
    assert max(int(v.version) for v in client.search_model_versions("name = 'tone'")) == int(theirs.version)
    client.delete_model_version("tone", theirs.version)


def test_the_eval_loss_check_fails_a_model_that_does_not_reproduce_its_trial():
    from lorasweep.search.handover._parity import Limits, reproduces

    limits = Limits(1e-3, {"fp32": 0.01}, 0.01)
    honest = reproduces(2.0, 0.6931, limits)  # log(2.0) = 0.69315
    assert honest.passed and honest.measured.startswith("0.69315 (+0.01%)")
    altered = reproduces(6.0e6, 0.6918, limits)  # what the altered adapter gave
    assert not altered.passed
    assert str(altered) == (
        "PyTorch eval loss must be within 1.0% of its trial's 0.6918, but got 15.607 (+2156.04%)"
    )


@pytest.mark.slow
def test_two_promotes_of_one_trial_at_once_end_in_one_version_and_both_tell_the_truth(swept, client):
    _registered(client)
    before = {v.version for v in client.search_model_versions("name = 'tone'")}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    both = [
        subprocess.Popen(
            [sys.executable, "-m", "lorasweep.search", "promote", "--trial", "1", "--force"],
            cwd=swept,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in outs]
    new = {v.version for v in client.search_model_versions("name = 'tone'")} - before
    assert len(new) == 1
    (version,) = new
    champion = client.get_model_version_by_alias("tone", "champion").version
    assert champion == version
    said = sorted(out for out, _ in outs)
    moved = [out for out in said if f"champion: models:/tone@champion -> version {version}" in out]
    waited = [
        out
        for out in said
        if f"trial 1 was promoted by another promote while this one waited: models:/tone@champion is "
        f"version {version}" in out
    ]
    assert len(moved) == 1 and len(waited) == 1
    assert "waiting: another promote to 'tone' is running" in waited[0]


def test_a_base_s_identity_pins_its_bytes(tmp_path):
    from lorasweep.objectives import base_identity

    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "README.md").write_text("not weights")
    first = base_identity(str(folder))
    assert re.fullmatch(f"folder sha256:{HEX}", first)
    (folder / "README.md").write_text("still not weights")
    assert base_identity(str(folder)) == first  # only the weights and the config count
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert base_identity(str(folder)) != first
    # a hub id not in the local cache: its revision as given (offline, no download to resolve it)
    assert base_identity("nobody/no-such-model", "v1") == "hub nobody/no-such-model@v1"


def test_onnx_runtime_s_reason_is_its_own_words_without_the_noise():
    from lorasweep.search.handover._export import ort_reason

    said = RuntimeError(
        "Non-zero status code returned while running GroupQueryAttention node. "
        "Name:'/model/layers.0/attn/GroupQueryAttention' Status Message: cos_cache dimension 1 must be "
        "<= head_size / 2 and a multiple of 8."
    )
    assert ort_reason(said) == (
        "GroupQueryAttention: cos_cache dimension 1 must be <= head_size / 2 and a multiple of 8"
    )


def test_a_half_done_promote_is_completed_only_while_its_adapter_copy_is_what_was_trained(
    swept, client, capsys, monkeypatch
):
    """A promote dies after its LoggedModel is logged (READY, "started": before its version); the
    adapter that LoggedModel's pyfunc serves is then changed. The next promote refuses to complete
    it, naming the file and both hashes, and registers nothing."""
    from lorasweep.search import load_study
    from lorasweep.search.handover import _promote as promotion
    from lorasweep.search.handover import _registry

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill just after the LoggedModel was finalized

    champion = _registry.champion(client, "tone")
    trial = 1 if champion is not None and champion.tags.get("lorasweep.trial_number") == "0" else 0
    with monkeypatch.context() as mp:
        mp.setattr(_registry, "version_of", dies)
        with pytest.raises(KeyboardInterrupt):
            promotion.promote(load_study("owned", None), trial, log=lambda line: None, force=True)
    run_id = _run_id(swept, trial)
    experiment = client.get_run(run_id).info.experiment_id
    (logged,) = [
        m
        for m in client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
        if m.tags.get("lorasweep.promotion") == "started"
    ]
    copy = Path(logged.artifact_location.removeprefix("file://")) / "artifacts" / "adapter"
    weights = copy / "adapter_model.safetensors"
    assert weights.is_file(), sorted(p.name for p in copy.parent.iterdir())
    original = weights.read_bytes()
    save_file({k: -v if ".lora_B." in k else v for k, v in load_file(weights).items()}, weights)
    before = _versions(client)
    try:
        assert main(["promote", "--trial", str(trial), "--force"]) == 2
        err = capsys.readouterr().err
        assert re.search(
            f"trial {trial}'s adapter/adapter_model.safetensors must have the SHA-256 its run recorded when "
            f"the trial logged it, but got sha256={HEX} \\(recorded sha256={HEX}\\)",
            err,
        ), err
        assert _versions(client) == before
    finally:
        weights.write_bytes(original)
        _registry.fail(client, logged)  # the other tests promote this trial from scratch


def test_a_promote_that_waited_for_one_that_registered_before_it_started_registers_nothing(swept, client):
    """Promote A registered trial 1 (its gate failed) and still holds the lock when B starts: B's
    snapshot already holds A's version, and B must still see it as registered meanwhile."""
    from lorasweep.search.handover._ownership import turn

    _registered(client)
    with turn(f"sqlite:///{swept}/mlruns/mlflow.db", "tone", print):
        theirs = client.create_model_version(
            "tone", source=str(swept), run_id=_run_id(swept, 1), tags={"lorasweep.gate": "failed"}
        )
        waiting = subprocess.Popen(
            [sys.executable, "-c", _WAITS],
            cwd=swept,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = waiting.stdout.readline()
        assert line.startswith("waiting: another promote to 'tone' is running"), line
    try:
        out, err = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, err[-2000:]
        said = f"trial 1 was registered by another promote while this one waited: version {theirs.version}"
        assert said in out
        assert max(int(v) for v in _versions(client)) == int(theirs.version)
    finally:
        client.delete_model_version("tone", theirs.version)


def test_adapter_files_of_any_name_are_recorded_by_index(tmp_path):
    """A runner of the user's may name its files what MLflow refuses in a tag key."""
    from lorasweep.objectives import TrialResult
    from lorasweep.search.provenance import adapter_sha256
    from lorasweep.search.record import Provenance
    from lorasweep.search.tracking import Tracker

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "weights (1)+x.bin").write_bytes(b"w")
    (adapter / "a@b,c=d.bin").write_bytes(b"v")
    tracker = Tracker(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "odd")
    parent = tracker.parent_run("odd", None, {}, "study: {name: odd}\n")
    run_id = tracker.start_trial(parent, "odd", 0, {"r": 4}, ["r"])
    tracker.finish_trial(
        run_id,
        TrialResult(metrics={"eval_loss": 1.0}, adapter_dir=adapter, base_identity="tiny sha256:0"),
        1.0,
    )
    tags = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db").get_run(run_id).data.tags
    keys = sorted(k for k in tags if k.startswith("lorasweep.adapter_sha256."))
    assert keys == [f"lorasweep.adapter_sha256.{i}" for i in range(3)]
    recorded = Provenance.of_run(tags)
    assert recorded.adapter_sha256 == adapter_sha256(adapter) and recorded.base == "tiny sha256:0"
    assert "weights (1)+x.bin" in recorded.adapter_sha256
    version = recorded.version_tags("trial-3.")
    assert Provenance.of_run(version, "trial-3.") == recorded


def test_a_hub_base_is_loaded_at_the_commit_its_trial_recorded(monkeypatch):
    from lorasweep.objectives import InputError, ModelSpec
    from lorasweep.search.errors import UserError
    from lorasweep.search.handover import _promote as promotion
    from lorasweep.search.record import Provenance

    loaded = []

    def load(spec, adapters, scratch):
        loaded.append(spec.revision)
        if spec.revision == "gone":
            raise InputError("no such revision")
        return "model"

    monkeypatch.setattr(promotion, "load_trial_model", load)
    spec = ModelSpec(base="org/lm")
    assert promotion._load(spec, Path("a"), Path("s"), [Provenance({}, "hub org/lm@abc123")]) == "model"
    assert promotion._load(spec, Path("a"), Path("s"), [Provenance({}, "tiny sha256:0")]) == "model"
    assert loaded == ["abc123", None]
    with pytest.raises(UserError, match="revision='gone' of 'org/lm', which did not load"):
        promotion._load(spec, Path("a"), Path("s"), [Provenance({}, "hub org/lm@gone")])


def test_a_qlora_trial_s_eval_loss_is_not_compared_with_an_fp32_rebuild(monkeypatch, tmp_path):
    """The trial scored on a 4-bit base: no fp32 rebuild is its reference. The table and parity.json
    say so; an lora trial's is compared as before."""
    from lorasweep.search.handover import _parity
    from lorasweep.search.handover._parity_table import format_parity
    from lorasweep.search.handover._promote import QLORA_UNCHECKED

    monkeypatch.setattr(_parity, "score", lambda *args: 2.0)
    monkeypatch.setattr(_parity, "speed", lambda *args: None)
    limits = _parity.Limits(1e-3, {"fp32": 0.01}, 0.01)

    def measured(unchecked):
        reference = _parity.Measured("pytorch", "transformers + peft", 1, 0.1)
        lm = type("LM", (), {"eos_id": 0})()
        return _parity.measure(lm, reference, [], [[1]], [{}], 4, 1, limits, 0.5, unchecked)

    qlora = measured(QLORA_UNCHECKED)
    assert qlora.passed and qlora.models[0].checks == []
    assert qlora.max_eval_loss_change is None and qlora.trial_eval_loss == 0.5
    assert f"PyTorch eval loss {QLORA_UNCHECKED}" in format_parity(qlora)
    qlora.save(tmp_path / "parity.json")
    assert json.loads((tmp_path / "parity.json").read_text())["eval_loss_note"] == QLORA_UNCHECKED
    assert _parity.Parity.load(tmp_path / "parity.json") == qlora
    lora = measured(None)
    assert not lora.passed and lora.max_eval_loss_change == 0.01  # log(2.0) is not within 1% of 0.5


# -- speed figures: their spread, the load, and ratios from the printed figures --------------------
def _timed(runs: dict[str, list[float]], load: float, cores: int = 2):
    from lorasweep.search.handover._parity import Measured, Parity, settle

    models = {name: Measured(name, "tool", 2**20, 0.1) for name in runs}
    settle(runs, models, "pytorch", load, cores)
    return Parity(8, 60, list(models.values()))


def _printed(line: str) -> tuple[float, float]:
    """(ms/token, speed) as one row of the table prints them."""
    found = re.search(r"(\d+\.\d+)\?? +[\d.]+-[\d.]+ +(\d+\.\d+)x", line)
    assert found, line
    return float(found[1]), float(found[2])


def test_a_speed_ratio_is_the_ratio_of_the_figures_printed_beside_it():
    from lorasweep.search.handover._parity_table import format_parity

    # Rounds whose median of per-round ratios (about 147) differs from the ratio of the medians.
    parity = _timed(
        {"pytorch": [81.97, 80.10, 83.40, 82.55, 81.20], "fp32": [0.556, 0.551, 0.571, 0.548, 0.562]},
        load=0.8,
    )
    rows = {line.split()[0]: line for line in format_parity(parity).splitlines()[2:4]}
    torch_ms, torch_speed = _printed(rows["pytorch"])
    ms, speed = _printed(rows["fp32"])
    assert (torch_ms, torch_speed) == (81.97, 1.0)
    assert re.search(r" 81\.97 +80\.10-83\.40 ", rows["pytorch"])
    assert speed == pytest.approx(torch_ms / ms, abs=0.05)  # as printed, to the printed decimal
    assert "?" not in rows["fp32"] and format_parity(parity).count("cores): none") == 1
    assert "timing: 1-minute load average 0.8 on 2 cores" in format_parity(parity)


def test_a_wide_spread_or_a_load_above_the_cores_is_marked_unreliable(tmp_path):
    from lorasweep.search.handover._parity import Parity
    from lorasweep.search.handover._parity_table import format_parity

    wide = _timed({"pytorch": [80.0, 81.0, 82.0, 79.0, 80.5], "fp32": [0.5, 0.9, 0.52, 0.51, 0.5]}, load=0.5)
    table = format_parity(wide)
    fp32 = next(line for line in table.splitlines() if line.startswith("fp32"))
    assert re.search(r" 0\.51\? +0\.50-0\.90 ", fp32)
    assert _printed(fp32)[1] == pytest.approx(80.5 / 0.51, abs=0.05)
    assert re.search(r"\dx\?", fp32)  # the ratio of an unreliable figure is unreliable too
    assert "cores): fp32 (spread 1.8x > 1.5x)" in table
    assert "pytorch (" not in table  # 79-82: within 1.5x

    loaded = _timed({"pytorch": [80.0, 80.0, 80.0], "fp32": [0.5, 0.5, 0.5]}, load=7.3, cores=2)
    assert "pytorch (load 7.3 > 2 cores)" in format_parity(loaded)
    loaded.save(tmp_path / "parity.json")  # the rounds and the load are kept in parity.json
    assert Parity.load(tmp_path / "parity.json") == loaded


def test_a_bundle_s_speed_is_merged_over_bundle_as_printed():
    from lorasweep.search.handover._bundle_parity import AdapterFigures, BundleParity
    from lorasweep.search.handover._parity import Check, Measured, settle
    from lorasweep.search.handover._parity_table import format_bundle

    bundle, merged = Measured("trial-1", "bundle", 2**20, 0.1), Measured("trial-1 merged", "m", 2**20, 0.1)
    runs = {"trial-1 merged": [0.80, 0.82, 0.79], "trial-1": [0.63, 0.64, 0.66]}
    settle(runs, {"trial-1 merged": merged, "trial-1": bundle}, "trial-1 merged", 0.4, 2)
    figures = AdapterFigures("trial-1", 1, 4, 1000, 1.0, 0.1, 2**20, merged.ms_per_token, bundle)
    figures.merged_ms_runs = merged.ms_runs
    base = Measured("base", "bundle", 2**20, 0.1)
    parity = BundleParity(8, 60, 2**21, base, [figures], Check("switch", True, "", ""))
    row = next(line for line in format_bundle(parity).splitlines() if line.startswith("trial-1"))
    assert re.search(r" 0\.64 +0\.63-0\.66 +0\.80 +0\.79-0\.82 ", row)
    assert "1.25x" in row  # 0.80 / 0.64 as printed: faster than merged, not "0.84x"
