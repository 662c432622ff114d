"""MLflow record of a study: one experiment, one parent run for the study, one nested run per trial.

Uses `MlflowClient` with explicit run ids rather than the fluent API: a worker juggles a parent and a
child run at once, and the fluent API's global "active run" would tie them to one thread.

Every call to the store is a transaction (on the default SQLite store, a commit to disk of some
milliseconds; on a server, a round trip), so a trial's learning curve is sent in batches: at most
CURVE_FLUSH_S seconds after a point is logged, and at once when the trial ends, together with its
final metrics and state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from sqlalchemy.exc import SQLAlchemyError

from lorasweep.objectives import TrialResult

from ._relocate import artifact_folder, relocate
from ._store_template import seed
from .errors import UserError, store_error
from .record import (
    CLASSIC_EXPERIMENT,
    DUPLICATE_OF_TAG,
    DUPLICATE_RUN_TAG,
    ERROR_TAG,
    EXPERIMENT_KIND_TAG,
    PRUNED_STEP_TAG,
    ROLE_TAG,
    SAMPLED_TAG,
    STATE_TAG,
    STUDY_ID_TAG,
    STUDY_TAG,
    TRIAL_TAG,
)
from .urls import absolute, redact, sqlite_path

GENERATIONS = "generations.json"  # a trial's sample generations: an MLflow table
# A trial's parameters and curve points wait at most this long before they are sent. Short trials then
# cost one call for all of them; long ones still show them live in the UI. A worker killed with -9
# loses at most this much of its trial's run (the Optuna trial keeps the parameters).
CURVE_FLUSH_S = 10.0
HEALTH_TIMEOUT_S = 10  # a tracking server's first answer
# MLflow's system metrics (CPU, memory, disk, network; GPU where pynvml finds one) on each trial's run:
# a sample every this many seconds while it trains ($MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL wins).
# MLflow's default of 10 s would give a demo trial one point or none.
SYSTEM_METRICS_S = 2.0
PRUNED_SUFFIX = " (pruned)"  # on a pruned trial's run name


def client(uri: str) -> MlflowClient:
    """An MLflow client for `uri`, once a tracking server there has answered. MLflow's own client
    would retry an unreachable server for minutes, then fail with the URL in its message, password
    and all; this says so at once, masked, as bad input."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.hostname:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{parts.port}" if parts.port else host
        probe = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
        try:
            urllib.request.urlopen(probe, timeout=HEALTH_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            pass  # it answered (an auth wall, a proxy's page): MLflow's own calls say the rest
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise UserError(
                f"the MLflow tracking URI must name a server that answers, but got {redact(uri)}: "
                f"{reason}. Start the server, or check the host, the port and the URI."
            ) from None
        _OUTAGES.watch(parts.hostname, redact(uri))
    if uri.startswith("sqlite:///"):
        return _local_client(uri, Path(uri.removeprefix("sqlite:///")))
    return MlflowClient(tracking_uri=uri)


def runs_page(ui_url: str, uri: str, parent_run_id: str | None) -> str:
    """The MLflow UI's address of a sweep's runs table: its experiment's runs tab in the machine-
    learning view. MLflow 3.17's UI picks an experiment's first tab by a view of its own (GenAI by
    default, kept per browser), not by the experiment's kind; the address's `workflowType` sets it.
    Without the study's parent run, the list of experiments in that view."""
    view = "?workflowType=machine_learning"
    if parent_run_id is not None:
        try:
            experiment = client(uri).get_run(parent_run_id).info.experiment_id
        except (MlflowException, UserError):  # a run not in this store, a store that does not answer
            experiment = None
        if experiment is not None:
            return f"{ui_url}/#/experiments/{experiment}/runs{view}"
    return f"{ui_url}/#/experiments{view}"


def _say(line: str) -> None:
    # Through tqdm: the sweep's progress bar shares stderr, and a bare print lands on its line.
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


class _Outages(logging.Filter):
    """A tracking server that stops answering under a sweep: one `warning:` line when it stops and
    one when it answers again, instead of urllib3's raw "Retrying (Retry(total=6, ...)) after
    connection broken by NewConnectionError(...)" line for each of MLflow's retries.

    MLflow's HTTP client retries a call with urllib3 (MLFLOW_HTTP_REQUEST_MAX_RETRIES times, with
    exponential backoff: about 4 minutes by default), and urllib3 logs each retry of a broken
    connection as a WARNING on its connection-pool logger. This filter on that logger turns the first
    one for a watched server into the line, and drops the rest. While a server is down it lowers the
    logger to DEBUG, where urllib3 logs every response it receives: the first one from that server
    ends the outage (from any thread, any client: a trial's log_batch, MLflow's system-metrics
    monitor), and the logger goes back to the level it had."""

    LOGGER = "urllib3.connectionpool"

    def __init__(self, say: Callable[[str], None] = _say) -> None:
        super().__init__()
        self.say = say
        self._servers: dict[str, str] = {}  # host -> the URI to show (masked)
        self._down: dict[str, float] = {}  # host -> time.monotonic() when it stopped answering
        self._level: int | None = None  # the logger's own level before an outage lowered it
        self._lock = threading.Lock()

    def watch(self, host: str, shown: str) -> None:
        logger = logging.getLogger(self.LOGGER)
        with self._lock:
            self._servers[host] = shown
            if self not in logger.filters:
                logger.addFilter(self)
                if not logger.isEnabledFor(logging.WARNING):  # the first retry must reach the filter
                    logger.setLevel(logging.WARNING)

    def filter(self, record: logging.LogRecord) -> bool:
        retry = getattr(record, "__urllib3-retry-warning", None)
        if retry is not None:
            return self._retrying(retry.get("host"), record)
        args = record.args if isinstance(record.args, tuple) else ()
        if record.levelno == logging.DEBUG and self._down and len(args) == 8:  # a response's line
            return self._answered(args)
        # What urllib3 says at DEBUG only reaches the logger because an outage lowered it to watch
        # for the first answer: none of it is for the user's handlers.
        return not (record.levelno == logging.DEBUG and self._level is not None)

    def _retrying(self, retried: str | None, record: logging.LogRecord) -> bool:
        host = retried or ""
        with self._lock:
            shown = self._servers.get(host)
            if shown is None:
                return True  # another server's (a hub, a data URL): not ours to reword
            if host in self._down:
                return False
            self._down[host] = time.monotonic()
            logger = logging.getLogger(self.LOGGER)
            if self._level is None and not logger.isEnabledFor(logging.DEBUG):
                self._level = logger.level
                logger.setLevel(logging.DEBUG)
        error = record.args[1] if isinstance(record.args, tuple) and len(record.args) > 1 else None
        reason = str(error).rsplit(": ", 1)[-1] if error is not None else "no connection"
        self.say(
            f"warning: the MLflow tracking server {shown} is not answering ({reason}); MLflow retries "
            f"each call for up to {_retry_budget_s() / 60:.0f} min (MLFLOW_HTTP_REQUEST_MAX_RETRIES) "
            "while lorasweep waits."
        )
        return False

    def _answered(self, args: tuple[object, ...]) -> bool:
        """urllib3's line for a response: '%s://%s:%s "%s %s %s" %s %s' (scheme, host, port,
        method, url, version, status, length). A response from a watched server that was down ends
        its outage (a 5xx is a proxy's answer, not the server's)."""
        host, status = str(args[1]), args[6]
        raised = self._level is not None
        with self._lock:
            if host not in self._down or not isinstance(status, int) or status >= 500:
                return not raised
            down = time.monotonic() - self._down.pop(host)
            if not self._down and self._level is not None:
                logging.getLogger(self.LOGGER).setLevel(self._level)
                self._level = None
        self.say(
            f"warning: the MLflow tracking server {self._servers[host]} answers again after {down:.0f} s."
        )
        return not raised


def _retry_budget_s() -> float:
    """How long MLflow's client retries one call at most (urllib3's backoff: none before the first
    retry, then factor * 2**n seconds, each at most 120)."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    )

    factor, retries = MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    return sum(min(120.0, factor * 2.0 ** (n - 1)) for n in range(2, retries + 1))


_OUTAGES = _Outages()


def _local_client(uri: str, db: Path) -> MlflowClient:
    """A client of a local SQLite store. MLflow creates the schema on first use with alembic
    migrations, which two processes starting on one new file at once would both run (one then dies
    with "table already exists"): a file lock beside the database lets one create it while the other
    waits. A file that is not an MLflow database is said in one line, with the fix. A store moved or
    copied with its project folder is pointed at the artifacts beside it (_relocate.py), once per
    process, with one line on stderr."""
    db.parent.mkdir(parents=True, exist_ok=True)
    if not db.exists():
        _forget_store(uri)  # deleted since this process last used it
        _relocated.discard(db)
    try:
        with FileLock(f"{db}.lock"):
            if not db.exists():
                seed(db)  # a ready empty schema rather than every migration (_store_template)
            found = MlflowClient(tracking_uri=uri)
            if db not in _relocated:
                _relocated.add(db)
                note = relocate(db)
                if note is not None:
                    _forget_artifact_repositories()
                    print(note, file=sys.stderr, flush=True)
            return found
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).splitlines()[0]
        raise UserError(
            f"the MLflow store must be an MLflow database this process can read, but got {db}: "
            f"{reason}. Move it aside (mv {db} {db}.broken) and run again to start a new MLflow record "
            "(the study's trials are kept in the Optuna storage), or restore it from a backup."
        ) from e


_relocated: set[Path] = set()  # local stores whose artifact locations this process has checked


def _forget_artifact_repositories() -> None:
    """MLflow keeps each run's artifact repository for the life of the process, made from the run's
    artifact location when first used: after a relocation those point into the old folder."""
    from mlflow.tracking._tracking_service import utils

    clear = getattr(getattr(utils, "_artifact_repos_cache", None), "clear", None)
    if clear is not None:
        clear()


def _forget_store(uri: str) -> None:
    """MLflow keeps a store and its database connections per URI for the life of the process; a
    database file deleted since must be opened anew, not written through connections to the gone
    file ("attempt to write a readonly database")."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service import utils

    engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
    if engine is not None:
        engine.dispose()
    registry = getattr(utils, "_tracking_store_registry", None)
    cache_clear = getattr(getattr(registry, "_get_store_with_resolved_uri", None), "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


class _Guarded:
    """An MlflowClient (or an artifact repository) whose store faults (a full disk, a permission, a
    database gone) raise one StoreError naming the store, instead of MLflow's and SQLAlchemy's
    tracebacks."""

    def __init__(self, client: Any, store: str) -> None:
        self._client, self.store = client, store

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except Exception as e:
                fault = store_error(e, self.store)
                if fault is None:
                    raise
                raise fault from e

        return guarded


class Tracker:
    def __init__(self, uri: str, experiment: str) -> None:
        uri = absolute(uri)
        database = sqlite_path(uri)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # alembic's migration chatter
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # Nor a "View run ... at: URL" line on stdout for every run closed on a tracking server: the
        # sweep prints its own line per trial.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.uri = uri
        self.client = _Guarded(client(uri), f"the MLflow store {redact(uri)}")
        self._curves: dict[str, list[Metric]] = {}  # run id -> curve points not sent yet
        self._sent_at: dict[str, float] = {}  # run id -> time.monotonic() of its last curve batch
        self._params: dict[str, list[Param]] = {}  # run id -> parameters not sent yet
        self._artifacts: dict[str, _Guarded] = {}  # run id -> its artifact repository, while it runs
        self._names: dict[str, str] = {}  # run id -> its trial's run name, while it runs
        kind = {EXPERIMENT_KIND_TAG: CLASSIC_EXPERIMENT}
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            # A local store keeps artifacts beside it (mlruns/artifacts for the default store), so
            # that the folder holding both moves as one; a server decides for itself.
            location = (artifact_folder(database) / experiment).as_uri() if database is not None else None
            try:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=location, tags=kind
                )
                return
            except MlflowException:  # another process created it meanwhile
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
        self.experiment_id = found.experiment_id
        # One made by an earlier version (or kind-guessed by the UI) is made a classic one now.
        if found.tags.get(EXPERIMENT_KIND_TAG) != CLASSIC_EXPERIMENT:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, CLASSIC_EXPERIMENT)

    # -- the study's parent run ------------------------------------------------------------------
    def parent_run(
        self,
        study_name: str,
        known_run_id: str | None,
        params: dict[str, Any],
        sweep_text: str,
        *,
        study_id: str | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> str:
        """Re-attach to the study's parent run if this store has it, else create it. Never
        duplicates, and never re-attaches the parent of another study.

        The id stored on the study comes first. Without one, the parent tagged with `study_id` (made
        by a process that stopped before it stored the id) is found by that tag. A parent with the
        study's name but another study id belongs to an earlier study of that name and is left
        alone. A stored id that this store does not have (the store was deleted or replaced, or the
        run deleted) is one `warn` line, then a new parent run."""
        if known_run_id is not None:
            lost = self._foreign_parent(known_run_id, study_id)
            if lost is None:
                self.client.update_run(known_run_id, status="RUNNING")
                return known_run_id
            if warn is not None:
                warn(
                    f"warning: study {study_name!r} lost its MLflow parent run {known_run_id}: {lost}. "
                    "The MLflow runs of its earlier trials went with it (their results stay in the "
                    "study); starting a new parent run."
                )
        elif study_id is not None:
            found = self.client.search_runs(
                [self.experiment_id],
                max_results=1,
                filter_string=f"tags.`{STUDY_ID_TAG}` = '{study_id}' and tags.`{ROLE_TAG}` = 'study'",
            )
            if found:
                self.client.update_run(found[0].info.run_id, status="RUNNING")
                return found[0].info.run_id
        return self._new_parent(study_name, params, sweep_text, study_id)

    def _foreign_parent(self, run_id: str, study_id: str | None) -> str | None:
        """Why run `run_id` cannot be this study's parent run, or None when it is (tagged with the
        study's id now if it was made before studies had ids)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return f"the MLflow store {redact(self.uri)} does not have it (a new or replaced store)"
        if run.info.lifecycle_stage == "deleted":
            return f"it was deleted from {redact(self.uri)}"
        owner = run.data.tags.get(STUDY_ID_TAG)
        if owner is not None and study_id is not None and owner != study_id:
            return f"it belongs to another study of the same name ({STUDY_ID_TAG}={owner})"
        if owner is None and study_id is not None:
            self.client.set_tag(run_id, STUDY_ID_TAG, study_id)
        return None

    def _new_parent(
        self, study_name: str, params: dict[str, Any], sweep_text: str, study_id: str | None
    ) -> str:
        tags = {STUDY_TAG: study_name, ROLE_TAG: "study"}
        if study_id is not None:
            tags[STUDY_ID_TAG] = study_id
        run = self.client.create_run(self.experiment_id, run_name=study_name, tags=tags)
        self._log_params(run.info.run_id, params)
        self.client.log_text(run.info.run_id, sweep_text, "sweep.yaml")
        return run.info.run_id

    def log_base_metrics(self, parent_id: str, metrics: dict[str, float]) -> None:
        """The base model's scores before tuning, as base_<metric> on the parent run."""
        self._log_metrics(parent_id, {f"base_{k}": v for k, v in metrics.items()}, step=0)

    def log_study_tags(self, parent_id: str, tags: dict[str, str]) -> None:
        """Tags of the study's own on its parent run (the learning-rate range it narrowed to)."""
        self.client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def finish_study(
        self, parent_id: str, summary: dict[str, float], tags: dict[str, str], status: str = "FINISHED"
    ) -> None:
        self._log_metrics(parent_id, summary, step=0)
        self.client.log_batch(parent_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(parent_id, status=status)

    def log_folder(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)

    def run_status(self, run_id: str) -> str | None:
        """RUNNING, FINISHED, FAILED or KILLED; None for a run this store does not have."""
        try:
            return self.client.get_run(run_id).info.status
        except MlflowException:
            return None

    def fail_study(self, parent_id: str, status: str = "FAILED") -> None:
        self.client.set_terminated(parent_id, status=status)

    # -- one child run per trial -----------------------------------------------------------------
    def start_trial(
        self,
        parent_id: str,
        study_name: str,
        number: int,
        params: dict[str, Any],
        sampled: list[str],
        tags: dict[str, str] | None = None,
    ) -> str:
        name = f"trial-{number}"
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                MLFLOW_PARENT_RUN_ID: parent_id,
                STUDY_TAG: study_name,
                ROLE_TAG: "trial",
                TRIAL_TAG: str(number),
                SAMPLED_TAG: ",".join(sampled),
                **(tags or {}),
            },
        )
        run_id = run.info.run_id
        self._names[run_id] = name
        # The parameters go with the first batch of curve points (or the trial's end): a log_batch
        # of their own cost each trial four database transactions, a tenth of a stub trial's time
        # at 1,000 trials (make bench, item e). The UI shows them CURVE_FLUSH_S later.
        self._params[run_id] = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        # Where its artifacts go, known now: MLflow would read the whole run again to find out.
        self._artifacts[run_id] = self._repository(run.info.artifact_uri)
        return run_id

    def _repository(self, artifact_uri: str) -> _Guarded:
        return _Guarded(get_artifact_repository(artifact_uri, tracking_uri=self.uri), self.client.store)

    @contextlib.contextmanager
    def system_metrics(self, run_id: str, enabled: bool = True) -> Iterator[None]:
        """MLflow's own monitor (a thread) samples the machine onto the run while the block runs."""
        if not enabled:
            yield
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # It says "started/stopped monitoring" at INFO for every trial: ours are the trial lines.
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_S, tracking_uri=self.uri)
        # Started a quarter interval late: the monitor publishes its first sample one interval after
        # it starts, so a trial that ends sooner (a duplicate, one pruned at once) gets none anyway,
        # and starting and stopping it cost such a trial 5 ms (a tenth of the study overhead at
        # 1,000 trials, make bench item e).
        starting = threading.Timer(monitor.sampling_interval / 4, monitor.start)
        starting.daemon = True
        starting.start()
        try:
            yield
        finally:
            starting.cancel()
            starting.join()  # a start under way completes first
            monitor.finish()  # nothing to do if it never started

    def log_curve(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        """Learning-curve points, sent in batches (see CURVE_FLUSH_S); the trial's end sends the rest."""
        now = int(time.time() * 1000)  # each point keeps the time it was logged at
        self._curves.setdefault(run_id, []).extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if time.monotonic() - self._sent_at.setdefault(run_id, time.monotonic()) >= CURVE_FLUSH_S:
            self._send(run_id, last=False)

    def finish_trial(self, run_id: str, result: TrialResult, wall_seconds: float) -> None:
        """Final metrics, costs, samples and the adapter; then the run is closed FINISHED."""
        tags = {STATE_TAG: "COMPLETE"}
        self._names.pop(run_id, None)
        artifacts = self._artifacts.pop(run_id, None) or self._repository(
            self.client.get_run(run_id).info.artifact_uri  # a run this process did not start
        )
        if result.samples:
            # What client.log_table writes (pandas' "split" JSON) and the tag by which MLflow finds
            # the run's tables, without log_table's three reads of the run to append to a table that
            # already exists: a trial writes its table once.
            columns = ("prompt", "reference", "output")
            table = {"columns": list(columns), "data": [[s[c] for c in columns] for s in result.samples]}
            with tempfile.TemporaryDirectory(prefix="lorasweep-generations-") as folder:
                path = Path(folder) / GENERATIONS
                path.write_text(json.dumps(table), encoding="utf-8")
                artifacts.log_artifact(str(path))
            tags[MLFLOW_LOGGED_ARTIFACTS] = json.dumps([{"path": GENERATIONS, "type": "table"}])
        if result.adapter_dir is not None:
            # What the trial trained, on its run with its adapter: promote and export hand the
            # adapter over only while its files and its base are still these. The base's identity is
            # the trial side's, taken when it loaded the base: a hub commit resolved here could be
            # one another process pulled since.
            from .provenance import adapter_sha256
            from .record import provenance_tags

            tags.update(provenance_tags(adapter_sha256(result.adapter_dir), result.base_identity))
        self._send(
            run_id,
            {
                **result.metrics,
                "trainable_params": result.trainable_params,
                "total_params": result.total_params,
                "train_seconds": result.train_seconds,
                "eval_seconds": result.eval_seconds,
                "generate_seconds": result.generate_seconds,
                "train_tokens": result.tokens,
                "wall_seconds": wall_seconds,
                "tokens_per_second": result.tokens_per_second,
                "peak_rss_mb": result.peak_rss_mb,
                **({"peak_cuda_mb": result.peak_cuda_mb} if result.peak_cuda_mb is not None else {}),
                **({"best_step": result.best_step} if result.best_step is not None else {}),
            },
            result.steps,
            tags,
        )
        if result.adapter_dir is not None:
            artifacts.log_artifacts(str(result.adapter_dir), "adapter")
        self.client.set_terminated(run_id, status="FINISHED")

    def prune_trial(self, run_id: str, step: int, wall_seconds: float) -> None:
        """A pruned trial keeps the curve it logged; no generation metrics, no adapter. Its run is
        renamed "trial-7 (pruned)": the runs table shows a run's name, and MLflow has no pruned
        status (the run is FINISHED, as a complete trial's)."""
        tags = {STATE_TAG: "PRUNED", PRUNED_STEP_TAG: str(step), MLFLOW_RUN_NAME: self._pruned_name(run_id)}
        self._artifacts.pop(run_id, None)
        self._names.pop(run_id, None)
        self._send(run_id, {"wall_seconds": wall_seconds}, step, tags)
        self.client.set_terminated(run_id, status="FINISHED")

    def reuse_trial(
        self, run_id: str, twin: int, twin_run_id: str | None, metrics: dict[str, float], state: str
    ) -> None:
        """A duplicate configuration: the earlier trial's metrics, and where its adapter is."""
        tags = {STATE_TAG: state, DUPLICATE_OF_TAG: str(twin)}
        if state == "PRUNED":
            tags[MLFLOW_RUN_NAME] = self._pruned_name(run_id)
        if twin_run_id:
            tags[DUPLICATE_RUN_TAG] = twin_run_id
        self._artifacts.pop(run_id, None)
        self._names.pop(run_id, None)
        self._send(run_id, metrics, 0, tags)
        self.client.set_terminated(run_id, status="FINISHED")

    def fail_trial(self, run_id: str, error: BaseException) -> None:
        """Close a trial's run that raised: KILLED for an interrupt, FAILED otherwise, with the reason."""
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        tags = {ERROR_TAG: f"{type(error).__name__}: {error}"[:5000], STATE_TAG: "FAIL"}
        self._artifacts.pop(run_id, None)
        self._names.pop(run_id, None)
        self._send(run_id, tags=tags)
        try:  # the traceback is a nicety; the run must not stay RUNNING for want of it (a full disk)
            self.client.log_text(run_id, "".join(traceback.format_exception(error)), "error.txt")
        finally:
            self.client.set_terminated(run_id, status=status)

    def kill_trial(self, run_id: str, reason: str) -> None:
        """Close the run of a trial whose worker died, if it is still RUNNING."""
        if self.run_status(run_id) != "RUNNING":  # closed already, or in another tracking store
            return
        self.client.log_batch(run_id, tags=[RunTag(ERROR_TAG, reason), RunTag(STATE_TAG, "FAIL")])
        self.client.set_terminated(run_id, status="KILLED")

    def close_orphan_trials(
        self, study_name: str, running: Callable[[], set[int]], study_id: str | None = None
    ) -> None:
        """Close trial runs left RUNNING whose Optuna trial no longer runs (a worker killed between
        opening the run and recording its id on the trial). `running` gives the numbers of the
        running trials; it is asked after the runs are read, so a trial that starts meanwhile is
        never taken for an orphan. A run tagged with another study's id (a study of the same name
        in another storage, running beside this one) is not this study's to close."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{ROLE_TAG}` = 'trial' "
            "and attributes.status = 'RUNNING'",
            max_results=1000,
        )
        if not runs:
            return
        alive = running()
        for run in runs:
            owner = run.data.tags.get(STUDY_ID_TAG)
            if owner is not None and study_id is not None and owner != study_id:
                continue
            if int(run.data.tags.get(TRIAL_TAG, -1)) not in alive:
                self.kill_trial(run.info.run_id, "the trial's worker stopped before the trial finished")

    # -- helpers ---------------------------------------------------------------------------------
    def _pruned_name(self, run_id: str) -> str:
        name = self._names.pop(run_id, None) or self.client.get_run(run_id).info.run_name
        return name if name.endswith(PRUNED_SUFFIX) else name + PRUNED_SUFFIX

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[start : start + 100])

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def _send(
        self,
        run_id: str,
        metrics: dict[str, float] | None = None,
        step: int = 0,
        tags: dict[str, str] | None = None,
        last: bool = True,
    ) -> None:
        """The run's pending parameters and curve points, with these metrics and tags, in one
        log_batch. `last`: the trial has ended, nothing more will come for this run."""
        now = int(time.time() * 1000)
        params = self._params.pop(run_id, [])
        items = self._curves.pop(run_id, []) + [
            Metric(k, float(v), now, step) for k, v in (metrics or {}).items()
        ]
        if last:
            self._sent_at.pop(run_id, None)
        else:
            self._sent_at[run_id] = time.monotonic()
        tag_items = [RunTag(k, v) for k, v in (tags or {}).items()]
        if items or params or tag_items:  # log_batch splits what is over the store's per-call limits
            self.client.log_batch(run_id, metrics=items, params=params, tags=tag_items)
