"""The command line itself: what `main` leaves behind in its caller's process, --version, `schema`,
and a parser whose every flag explains itself (the CLI reference in docs/ is generated from it)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import signal
import subprocess
import sys

import optuna
import pytest

from lorasweep.search import sweepfile
from lorasweep.search.cli import _ABOUT, build_parser, main
from lorasweep.search.errors import SweepError
from lorasweep.search.progress import objective_names


def _own_handler(signum, frame) -> None:  # a caller's own SIGTERM handler, never called here
    raise AssertionError("not expected to run")


@pytest.mark.parametrize("debug", [False, True])
def test_main_gives_the_caller_its_sigterm_handler_back(in_tmp, debug):
    """main() makes SIGTERM stop a command like Ctrl-C while it runs, and only then: a program (or
    pytest) that calls it in-process keeps its own handler, whether the command returns or raises."""
    before = signal.signal(signal.SIGTERM, _own_handler)
    try:
        if debug:  # --debug: the error comes out as the exception
            with pytest.raises(SweepError):
                main(["--debug", "validate", "missing.yaml"])
        else:
            assert main(["validate", "missing.yaml"]) == 2
        assert signal.getsignal(signal.SIGTERM) is _own_handler
    finally:
        signal.signal(signal.SIGTERM, before)


def test_version_is_the_installed_packages(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"lorasweep {importlib.metadata.version('lorasweep')}\n"


def test_schema_prints_the_sweep_files_json_schema(capsys):
    if not hasattr(sweepfile, "json_schema"):
        pytest.skip("lorasweep.search.sweepfile.json_schema is not there yet")
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"study", "search_space"} <= set(schema["properties"])
    assert schema == json.loads(json.dumps(sweepfile.json_schema()))  # the models' schema, as printed


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(commands.choices)


def test_every_command_and_flag_has_its_help():
    """Each command comes from one builder and one `_ABOUT` entry, and every argument says what it
    is: the generated CLI reference shows nothing the parser does not explain."""
    commands = _subcommands(build_parser())
    assert list(commands) == list(_ABOUT)
    for name, command in commands.items():
        for action in command._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_a_study_without_metric_names_shows_optunas_value_names():
    """A study lorasweep did not create (or stopped before it named its metrics): value0, value1..."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert objective_names(study) == ("value0", "value1")
    study.set_metric_names(["f1", "eval_loss"])
    assert objective_names(study) == ("f1", "eval_loss")


def test_a_reader_that_goes_away_gets_no_traceback():
    """`lorasweep schema | head -1`: the pipe closes before the output is written; the command ends
    quietly with a shell's SIGPIPE code instead of a BrokenPipeError traceback."""
    done = subprocess.Popen(
        [sys.executable, "-m", "lorasweep.search", "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    done.stdout.close()  # before the command has written anything: its write meets a closed pipe
    err = done.stderr.read()
    assert done.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_progress_is_a_flag_of_the_commands_that_run_trials(capsys):
    from lorasweep.search.cli import _run_options

    parser = build_parser()
    for command in (["run", "sweep.yaml"], ["resume", "demo"], ["worker"]):
        assert parser.parse_args(command).progress == "auto"
        assert parser.parse_args([*command, "--progress", "lines"]).progress == "lines"
    quiet = _run_options(parser.parse_args(["run", "sweep.yaml", "--progress", "none"]))
    assert quiet["quiet"] and quiet["progress"] == "none"  # none: only the result and errors, as -q
    with pytest.raises(SystemExit) as refused:
        parser.parse_args(["run", "sweep.yaml", "--progress", "dots"])
    assert refused.value.code == 2 and "'dots'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # only where trials run
        parser.parse_args(["trials", "--progress", "lines"])
