"""OpenMP's passive wait on a busy machine: set before torch loads, a user's own setting kept, a quiet
machine left with OpenMP's spin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorasweep.search.threads import SHARED_FROM_CORES, USER_WAIT_SETTINGS, busy_cores, wait_passively


def test_sets_passive_on_a_busy_machine_when_the_user_did_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    env: dict[str, str] = {"PATH": "/bin"}
    assert wait_passively(env, busy=lambda: 1.0) is True
    assert env == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}


def test_a_quiet_machine_keeps_openmps_spin(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spin is the faster wait where no other program holds a core (1.7x faster on the demo)."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    env: dict[str, str] = {"PATH": "/bin"}
    assert wait_passively(env, busy=lambda: 0.1) is False
    assert env == {"PATH": "/bin"}


def test_a_busy_loop_elsewhere_is_seen_as_a_busy_core() -> None:
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert busy_cores(1.0) > SHARED_FROM_CORES  # about one core's worth
    finally:
        loop.kill()
        loop.wait()


@pytest.mark.parametrize(
    "name,value", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "300000"), ("KMP_BLOCKTIME", "200")]
)
def test_a_users_own_setting_is_kept(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    env = {name: value}
    assert wait_passively(env, busy=lambda: 2.0) is False
    assert env == {name: value}


def test_a_user_set_passive_counts_as_passive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert wait_passively({"OMP_WAIT_POLICY": " passive"}) is True


def test_too_late_once_torch_is_loaded_says_what_to_do() -> None:
    import torch  # noqa: F401  the notebook's case: torch came first

    said: list[str] = []
    env: dict[str, str] = {}
    assert wait_passively(env, log=said.append, busy=lambda: 1.0) is False
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}  # still set: worker processes inherit it
    assert len(said) == 1 and "before importing torch" in said[0]
    wait_passively(env, log=said.append, busy=lambda: 1.0)  # the next run in the notebook: said once
    assert wait_passively({"OMP_WAIT_POLICY": "ACTIVE"}, log=said.append, busy=lambda: 1.0) is False
    assert len(said) == 1  # the user's own choice: nothing to say


def test_run_on_a_busy_machine_sets_it_before_openmp_starts(tmp_path: Path) -> None:
    """A real `lorasweep run` beside a busy loop: OpenMP itself prints the wait policy it read when
    torch loaded (the data check loads the tokenizer, and torch with it, then refuses the data: exit
    2, no training)."""
    (tmp_path / "data.jsonl").write_text('{"x": "a"}\n{"x": "b"}\n')
    (tmp_path / "s.yaml").write_text(
        "study: {name: t, metric: eval_loss, n_trials: 1}\n"
        "model: {base: tiny}\n"
        'data: {path: data.jsonl, prompt_template: "P: {phrase}", response_template: " {tone}"}\n'
        "search_space:\n  learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in USER_WAIT_SETTINGS}
    env.update(OMP_DISPLAY_ENV="TRUE", HF_HUB_OFFLINE="1")
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another program's busy core
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lorasweep.search", "run", "s.yaml"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        loop.kill()
        loop.wait()
    assert done.returncode == 2, done.stderr
    assert "OPENMP DISPLAY ENVIRONMENT BEGIN" in done.stderr  # torch (its OpenMP) did load
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in done.stderr
