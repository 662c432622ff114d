# Two commands on a fresh machine: `make demo` and `make test` (each sets everything up first).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint typecheck docs docs-serve test-slow test-browser test-service test-all bench bench-grid bench-grid-phrase bench-memory bench-workers \
	bench-mlflow bench-refusals bench-cli bench-system-metrics bench-faults bench-peer bench-scale bench-shared tiny-base clean

setup: $(STAMP)

# torch goes first and pinned: a bare `torch` requirement on a machine without it pulls a multi-GB
# CUDA build, while torch==2.13.0 is a CPU build that pip finds on this disk.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,dev,docs]'
	touch $(STAMP)

# The sweep, then its best trial into the MLflow registry with ONNX exports checked against PyTorch.
demo: $(STAMP)
	$(BIN)/lorasweep run spaces/demo.yaml
	$(BIN)/lorasweep promote --study demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# The code's own checks, as .ci/run makes them: ruff's rules, ruff's format, mypy.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck

# mypy reads the package as it is installed (search/ as lorasweep.search, objectives/ as
# lorasweep.objectives), which setuptools' editable finder hides from it: a tree of links in build/
# shows it that layout, and the paths in mypy's messages are turned back into the repository's.
TYPECHECK := build/typecheck
typecheck: $(STAMP)
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/lorasweep
	for f in lorasweep/*.py lorasweep/py.typed; do ln -s $(CURDIR)/$$f $(TYPECHECK)/lorasweep/; done
	ln -s $(CURDIR)/search $(TYPECHECK)/lorasweep/search
	ln -s $(CURDIR)/objectives $(TYPECHECK)/lorasweep/objectives
	bash -o pipefail -c 'MYPYPATH=$(TYPECHECK) $(BIN)/mypy -p lorasweep | sed -e "s#^$(TYPECHECK)/lorasweep/search/#search/#" -e "s#^$(TYPECHECK)/lorasweep/objectives/#objectives/#" -e "s#^$(TYPECHECK)/lorasweep/#lorasweep/#"'

# The manual (docs/, MkDocs with the Material theme) into build/site; --strict fails on a broken link
# or a page missing from the navigation. (NO_MKDOCS_2_WARNING: Material's banner about its end of
# life in 2027, printed on every build, says nothing about this manual.)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# The manual served on loopback while you write it: http://127.0.0.1:8000
docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

# The slow end-to-end runs only (the demo sweep; CPU only).
test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

# The MLflow UI and the report in headless Chromium, from Debian's packages (installed if missing).
test-browser: $(STAMP) /usr/bin/chromium /usr/bin/chromedriver
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m browser

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
/usr/bin/chromium /usr/bin/chromedriver &:
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver

# Parallel sweeps against real services on loopback: a PostgreSQL cluster the tests start themselves
# (Debian's postgresql package, installed if missing) and an MLflow server backed by it.
test-service: $(STAMP)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q postgresql; }
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m service

# Everything this machine can run: fast, slow and browser tests; no GPU or external services.
test-all: $(STAMP) /usr/bin/chromium /usr/bin/chromedriver
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m 'not gpu and not service'

# The performance table (docs/performance.md): lorasweep's trials against bare training, its search against random
# search, grid search and the pruners (replayed from benchmarks/demo_grid.json and phrase_grid.json),
# evaluation cost, study overhead at 1,000 trials. 8-10 min on 2 cores. OpenMP threads wait passively: while this was written, on a machine
# shared with other jobs, spinning threads made the same training several times slower from one run
# to the next; `make bench OMP_WAIT_POLICY=` measures with OpenMP's default instead.
OMP_WAIT_POLICY ?= PASSIVE
bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(if $(OMP_WAIT_POLICY),OMP_WAIT_POLICY=$(OMP_WAIT_POLICY)) $(BIN)/python benchmarks/bench.py

# Re-record the two tables that `make bench` replays: every configuration of a sweep's search space on
# a grid, trained once. The demo's (about 90 min on 2 cores) and the free-text task's (about 30 min).
bench-grid: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/record_grid.py spaces/demo.yaml benchmarks/demo_grid.json

bench-grid-phrase: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/record_grid.py spaces/phrase.yaml benchmarks/phrase_grid.json

# RSS after trial 2 and trial 20 of a tiny sweep in one worker (about 70 s on 2 cores).
bench-memory: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/memory.py

# The split of the cores that finishes a sweep soonest, 1 process x N threads against N x 1, at the
# tiny base and at SmolLM2-135M's shape: --workers auto's rule (about 10 min on 2 cores).
bench-workers: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/workers.py

# Concurrent writers to the local MLflow store: SQLite directly against a loopback server (about 3 min).
bench-mlflow: $(STAMP)
	$(BIN)/python benchmarks/mlflow_writers.py

# docs/failures.md's "What lorasweep refuses, and how": every hostile or extreme input, run as a user would,
# with its exit code, its line, its time and its peak memory (about 4 min on 2 cores).
bench-refusals: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/refusals.py

# CPU seconds of lorasweep --help, trials and best beside python -c pass and mlflow --help (about 1 min).
bench-cli: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cli.py

# A trial's wall time with MLflow's system metrics sampled every 2 s against none, alternating (about 5 min).
bench-system-metrics: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/system_metrics.py

# docs/failures.md's "Faults, replayed" table: each fault done to a real sweep (kills, cut, removed or
# altered stores, a full disk on a tmpfs, which needs root; deletes, timeouts and Ctrl-C under a live
# run, an MLflow server outage; refused names, links and files), then the same command again. About 20
# min on 2 cores; rows print as cases end, and `benchmarks/faults.py WORD ...` runs some cases.
bench-faults: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/faults.py

# The peer race: `lorasweep run` with its defaults against transformers' Trainer.hyperparameter_search
# (Optuna) doing the same 4-trial search, whole processes, alternating, 3 rounds; then each tool with its
# own defaults for 8 trials, the wall time to reach the peer's best eval loss (about 15 min on 2 cores).
bench-peer: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/peer_race.py

# Real sizes: random-init models of SmolLM2-135M's and Qwen2.5-0.5B's shapes, a lorasweep trial beside a
# bare peft loop, lorasweep's share, the exports and the gate (about 15 min on 2 cores, 10 GB of RAM).
bench-scale: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/scale_models.py

# A demo trial on a shared machine: quiet and beside one busy process, with lorasweep's passive OpenMP
# wait and OpenMP's default spin (about 15 min on 2 cores; docs/performance.md, "A shared machine").
# No OMP_WAIT_POLICY here: the script sets each policy itself, as a user would.
bench-shared: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/shared_machine.py

# Rebuild the shipped tiny base (objectives/assets/tiny) from objectives/tiny.py's recipe, about a
# minute; it prints the hashes to record in objectives.tiny.SHIPPED_SHA256.
tiny-base: $(STAMP)
	$(BIN)/python -m lorasweep.objectives.tiny

clean:
	rm -rf $(VENV) build *.egg-info
