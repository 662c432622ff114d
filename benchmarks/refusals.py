"""What lorasweep refuses, and how: every hostile or extreme input of docs/failures.md's table, run as a
user would run it (the `lorasweep` command, in a scratch folder), with its exit code, the line it
shows, its time and its peak memory.

    .venv/bin/python benchmarks/refusals.py      (or: make bench-refusals; about 3 min on 2 cores)

Prints a Markdown table. Peak memory is the command's maximum resident set (os.wait4), so it
includes Python, the libraries each command imports, and the tiny base where a command loads it.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LORASWEEP = Path(sys.executable).parent / "lorasweep"
MICRO_BASE = ROOT / "tests" / "fixtures" / "study_0_1" / "base"  # a 127k-parameter Llama

# A few trials' worth of settings, so the cases that run do so in seconds.
SMALL = (
    "train: {max_steps: 2, eval_steps: 2, logging_steps: 1, per_device_train_batch_size: 8}\n"
    "eval: {max_samples: 4, max_new_tokens: 2}\n"
)
QA = "prompt_template: 'Q: {q}\\nA:', response_template: ' {a}'"


@dataclass
class Case:
    what: str  # the input, as docs/failures.md's table names it
    args: list[str]
    files: dict[str, str] = field(default_factory=dict)
    setup: str | None = None  # a function below that writes larger files
    first_line_only: bool = False  # a server: stopped once it serves


def _rows(n: int, long_prompt: set[int] | None = None, huge_eval: bool = False) -> str:
    lines = []
    for i in range(n):
        q = "why " * (600 if long_prompt and i in long_prompt else 2)
        if huge_eval and i == n - 1:
            q = "why " * 2_500_000  # 10 MB
        lines.append(json.dumps({"q": q.strip(), "a": "yes" if i % 2 else "no"}))
    return "\n".join(lines) + "\n"


def _bomb(depth: int) -> str:
    names = [f"l{i}" for i in range(depth + 1)]
    lines = [f"{names[0]}: &{names[0]} [ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    lines += [f"{n}: &{n} [{', '.join(['*' + prev] * 9)}]" for prev, n in itertools.pairwise(names)]
    return "\n".join(lines) + f"\nsearch_space: {{lora_r: {{type: choice, values: *{names[-1]}}}}}\n"


def _custom_code(folder: Path) -> None:
    base = folder / "custom"
    shutil.copytree(MICRO_BASE, base)
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (base / "config.json").write_text(json.dumps(config))
    (base / "modeling_custom.py").write_text(
        "from transformers import LlamaForCausalLM\n\n\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n    pass\n"
    )


def _write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text, encoding="utf-8")


def _store(folder: Path) -> None:
    """An empty MLflow store, for `ui` to serve."""
    (folder / "mlruns").mkdir()
    code = f"from mlflow import MlflowClient; MlflowClient('sqlite:///{folder}/mlruns/mlflow.db').search_experiments()"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


SETUPS = {
    "store": _store,
    "custom": _custom_code,
    "200k": lambda f: _write(f, "rows.jsonl", _rows(200_000)),
    "10mb": lambda f: _write(f, "rows.jsonl", _rows(40, huge_eval=True)),
    "all long": lambda f: _write(f, "rows.jsonl", _rows(40, long_prompt=set(range(40)))),
    "some long": lambda f: _write(f, "rows.jsonl", _rows(40, long_prompt={0, 3, 5})),
    "short": lambda f: _write(f, "rows.jsonl", _rows(40)),
}

CASES = [
    Case(
        "YAML bomb: 9 anchors of 9 aliases (9^9 values once expanded), 0.5 kB",
        ["validate", "s.yaml"],
        {"s.yaml": _bomb(8)},
    ),
    Case(
        "YAML nested 5,000 levels deep", ["validate", "s.yaml"], {"s.yaml": "a: " + "[" * 5000 + "]" * 5000}
    ),
    Case(
        "tracking URI with a password, server down",
        ["run", "s.yaml", "--tracking-uri", "http://user:hunter2@127.0.0.1:9"],
        {"s.yaml": "study: {name: s, n_trials: 1}\n" + SMALL},
    ),
    Case(
        "tracking URI with a token, server down",
        ["run", "s.yaml", "--tracking-uri", "https://hunter2@127.0.0.1:9"],
        {"s.yaml": "study: {name: s, n_trials: 1}\n" + SMALL},
    ),
    Case(
        "a data URL with a token",
        ["validate", "s.yaml"],
        {"s.yaml": f"data: {{path: 'https://hunter2@example.com/rows.jsonl', {QA}}}\n"},
    ),
    Case(
        "mysql:// study storage without its driver",
        ["run", "s.yaml", "--storage", "mysql://u:hunter2@127.0.0.1/db"],
        {"s.yaml": "study: {name: s, n_trials: 1}\n" + SMALL},
    ),
    Case(
        "`ui --host 0.0.0.0`",
        ["ui", "--host", "0.0.0.0", "--port", "5391"],
        first_line_only=True,
        setup="store",
    ),
    Case(
        "a model folder with its own code, trust_remote_code off",
        ["run", "s.yaml"],
        {"s.yaml": "model: {base: custom}\n" + SMALL},
        setup="custom",
    ),
    Case(
        "the same, trust_remote_code on (1 trial)",
        ["run", "s.yaml"],
        {"s.yaml": "study: {n_trials: 1}\nmodel: {base: custom, trust_remote_code: true}\n" + SMALL},
        setup="custom",
    ),
    Case(
        "200,000 rows, eval carved out (40,000 rows; 1 trial)",
        ["run", "s.yaml"],
        {"s.yaml": f"study: {{n_trials: 1}}\ndata: {{path: rows.jsonl, {QA}, label_column: null}}\n" + SMALL},
        setup="200k",
    ),
    Case(
        "a 10 MB line as an eval row (1 trial)",
        ["run", "s.yaml"],
        {
            "s.yaml": f"study: {{n_trials: 1}}\ndata: {{path: rows.jsonl, {QA}, eval_split: 'train[30:40]', "
            "train_split: 'train[:30]'}\n" + SMALL
        },
        setup="10mb",
    ),
    Case(
        "every prompt longer than max_length",
        ["validate", "s.yaml"],
        {"s.yaml": f"data: {{path: rows.jsonl, {QA}, max_length: 32}}\n"},
        setup="all long",
    ),
    Case(
        "3 of 40 prompts longer than max_length",
        ["validate", "s.yaml"],
        {"s.yaml": f"data: {{path: rows.jsonl, {QA}, max_length: 32}}\n"},
        setup="some long",
    ),
    Case(
        "a response_template field the data lacks",
        ["validate", "s.yaml"],
        {"s.yaml": "data: {path: rows.jsonl, prompt_template: '{q}', response_template: ' {answer}'}\n"},
        setup="short",
    ),
    Case(
        "target modules the base lacks", ["run", "s.yaml"], {"s.yaml": "model: {target_modules: [c_attn]}\n"}
    ),
    Case(
        "an http:// data file this machine cannot reach",
        ["run", "s.yaml"],
        {"s.yaml": f"data: {{path: 'http://127.0.0.1:9/rows.jsonl', {QA}}}\n"},
    ),
    Case(
        "the password database as data",
        ["validate", "s.yaml"],
        {"s.yaml": f"data: {{path: /etc/passwd, {QA}}}\n"},
    ),
    Case(
        "three misspelt parameter names",
        ["validate", "s.yaml"],
        {
            "s.yaml": "train: {max_step: 3, learnig_rate: 0.1}\n"
            "search_space: {lora_rr: {type: int, low: 1, high: 2}}\n"
        },
    ),
    Case("`sampler: bayes`", ["validate", "s.yaml"], {"s.yaml": "study: {sampler: bayes}\n"}),
    Case("`pruner: asha`", ["validate", "s.yaml"], {"s.yaml": "study: {pruner: asha}\n"}),
    Case(
        "`type: loguniform`",
        ["validate", "s.yaml"],
        {"s.yaml": "search_space: {learning_rate: {type: loguniform, low: 1e-5, high: 1e-3}}\n"},
    ),
    Case(
        "a malformed JSONL line 2",
        ["validate", "s.yaml"],
        {
            "s.yaml": f"data: {{path: rows.jsonl, {QA}}}\n",
            "rows.jsonl": '{"q": "a", "a": "b"}\n{"q": oops}\n',
        },
    ),
]


@dataclass
class Outcome:
    code: int
    said: str
    lines: int
    seconds: float
    peak_mib: float


def run(case: Case) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="lorasweep-refusal-") as scratch:
        folder = Path(scratch)
        for name, text in case.files.items():
            _write(folder, name, text)
        if case.setup:
            SETUPS[case.setup](folder)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        started = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            process = subprocess.Popen(
                [str(LORASWEEP), *case.args],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=err,
                text=True,
                start_new_session=True,
            )
            if case.first_line_only:  # a server: what it says before it serves, then Ctrl-C
                while process.poll() is None and out.tell() == 0:
                    time.sleep(0.05)
                    out.seek(0, os.SEEK_END)
                seconds = time.perf_counter() - started
                os.killpg(process.pid, signal.SIGINT)
            _, status, usage = os.wait4(process.pid, 0)
            if not case.first_line_only:
                seconds = time.perf_counter() - started
            code = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            lines = [
                line.strip() for line in err.read().splitlines() + out.read().splitlines() if _worth(line)
            ]
    # The warning or note a run that goes on gives, else its first line (an error, or validate's OK).
    said = next((line for line in lines if line.startswith(("warning", "note"))), lines[0] if lines else "-")
    return Outcome(code, said, len(lines), seconds, usage.ru_maxrss / 1024)


def _worth(line: str) -> bool:
    """What the user reads: errors, warnings and notes, not the header or the progress lines."""
    line = line.strip()
    return (
        bool(line)
        and line != "error: the sweep cannot run:"
        and (line.startswith(("error", "warning", "note", "s.yaml", "Valid", "best")))
    )


def main() -> int:
    print(
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}; lorasweep at {ROOT}\n"
    )
    print("| input | exit | what lorasweep says (its first line; +N: more lines) | seconds | peak MiB |")
    print("| --- | --- | --- | --- | --- |")
    for case in CASES:
        outcome = run(case)
        said = outcome.said.replace("|", "\\|")
        more = f" (+{outcome.lines - 1})" if outcome.lines > 1 else ""
        print(
            f"| {case.what} | {outcome.code} | {said}{more} "
            f"| {outcome.seconds:.1f} | {outcome.peak_mib:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
