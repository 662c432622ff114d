"""The study journal (mlruns/optuna.journal) survives a write cut short: a kill or a full disk
mid-append leaves a partial last line, which the next append would join to a whole record and make
the study unreadable for good. Stub trial runners: nothing trains."""

from __future__ import annotations

import errno
import json
import shutil

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from lorasweep.search import RunOptions, load_sweep, run_sweep
from lorasweep.search.cli import main
from lorasweep.search.errors import UserError
from lorasweep.search.storage import open_storage

from .test_resilience import GRID, curve_runner

JOURNAL = "mlruns/optuna.journal"


def _sweep(write):
    return load_sweep(write(GRID.format(metric="f1", seed=0, extra="")))


def _records(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines()]  # raises on a broken line


def test_a_partial_last_record_is_cut_with_a_backup_before_the_next_append(stores, write, capsys):
    sweep = _sweep(write)
    run_sweep(sweep, RunOptions(n_trials=2, quiet=True, plots=False), runner=curve_runner())
    journal = stores / JOURNAL
    whole = journal.read_bytes()
    journal.write_bytes(whole + whole.splitlines(keepends=True)[-1][:-7])  # a record cut mid-write
    damaged = journal.read_bytes()
    capsys.readouterr()

    study = run_sweep(sweep, RunOptions(n_trials=3, quiet=True, plots=False), runner=curve_runner())

    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    repaired = journal.read_bytes()
    assert repaired.startswith(whole) and len(_records(repaired)) > len(_records(whole))
    backups = list(journal.parent.glob("optuna.journal.*.partial"))
    assert len(backups) == 1 and backups[0].read_bytes() == damaged
    said = [line for line in capsys.readouterr().err.splitlines() if "partial" in line]
    expected = (
        f"warning: the study journal {JOURNAL} ended in a partial record (a write cut short by a kill "
        f"or a full disk): cut {len(damaged) - len(whole)} bytes; the file as it was is kept as "
        f"{backups[0].relative_to(stores)}"
    )
    assert said == [expected]
    # Every later command reads the study: the trials and the CLI's listing.
    reread = optuna.load_study(study_name="stub", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert len(reread.trials) == 3
    assert main(["trials", "--json"]) == 0


def test_a_whole_journal_is_never_touched(stores, write, capsys):
    sweep = _sweep(write)
    run_sweep(sweep, RunOptions(n_trials=1, quiet=True, plots=False), runner=curve_runner())
    journal = stores / JOURNAL
    before = journal.read_bytes()
    run_sweep(sweep, RunOptions(n_trials=2, quiet=True, plots=False), runner=curve_runner())

    assert journal.read_bytes().startswith(before)
    assert not list(journal.parent.glob("*.partial"))
    assert "partial" not in capsys.readouterr().err


def test_the_repair_runs_under_the_journals_lock_for_every_writer(tmp_path):
    """Any writer of the journal opened by lorasweep repairs before it appends, and holds Optuna's
    lock while it does: another process mid-append cannot be cut."""
    path = tmp_path / "x.journal"
    storage = open_storage(str(path))
    study = optuna.create_study(study_name="x", storage=storage)
    with open(path, "ab") as f:
        f.write(b'{"op_code": 5, "worker_id"')
    study.set_user_attr("after", 1)

    assert _records(path.read_bytes())[-1]["user_attr"] == {"after": 1}
    assert not (tmp_path / "x.journal.lock").exists()  # released
    reread = optuna.load_study(study_name="x", storage=JournalStorage(JournalFileBackend(str(path))))
    assert reread.user_attrs == {"after": 1}


def test_no_room_for_the_backup_stops_with_one_message_and_cuts_nothing(tmp_path, monkeypatch):
    path = tmp_path / "x.journal"
    study = optuna.create_study(study_name="x", storage=open_storage(str(path)))
    with open(path, "ab") as f:
        f.write(b'{"op_code": 5')
    damaged = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(UserError) as refused:
        study.set_user_attr("after", 1)
    assert str(refused.value).startswith(
        f"the study journal must end in a whole record, but got journal={str(path)!r}: its last 13 bytes "
        "are a record cut short, and its backup could not be written (No space left on device). Free "
        "some space"
    )
    assert path.read_bytes() == damaged and not list(tmp_path.glob("*.partial"))
    assert not (tmp_path / "x.journal.lock").exists()  # released
