"""A sweep file, read and checked whole, as one typed, frozen `Sweep`.

Sections a file leaves out fall back to the embedded defaults (the built-in tiny model and the
shipped tone data set), so a file in the Olive material's format, with only `search_strategy` and
`search_space`, runs as it is. Every problem in the file is collected and raised together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna

from lorasweep import objectives
from lorasweep.objectives import METRICS, DataSpec, EvalSpec, ModelSpec

from ..errors import Problems, UserError, unknown_key
from ..record import StudyRecord, stored_tracking_uri, study_sweep_file
from ..strategy import conditional_options, parse_pruner, parse_sampler_options
from ..urls import is_local, redact, tracking_uri
from ._models import SECTIONS, M, Promote, SearchStrategy, Study, Tracking, check, name_problem
from ._space import SearchSpace, grid_points, mapping, parse_space, written_name
from ._yaml import load_yaml


@dataclass(frozen=True)
class StudySpec:
    name: str
    metrics: tuple[str, ...] = ("eval_loss",)
    directions: tuple[Literal["minimize", "maximize"], ...] = ("minimize",)
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = field(default_factory=dict)  # the Optuna sampler's own, checked
    seed: int | None = 0
    n_trials: int = 10
    timeout: float | None = None  # seconds for this run of the sweep
    storage: str | None = None  # an Optuna storage URL; None: the journal under mlruns/
    pruner: dict[str, Any] | None = None  # {type: median, ...}; None: every trial runs to the end
    retries: int = 1  # times a trial whose worker died (or was interrupted) is run again
    # Before the first trial, one learning-rate range test narrows learning_rate (search/_lr_range.py)
    lr_range_test: bool = False
    # An earlier study in the same storage, on the same base: its best configurations that fit this
    # space run first (search/_warm_start.py). None: no warm start.
    warm_start: str | None = None


@dataclass(frozen=True)
class Sweep:
    study: StudySpec
    space: SearchSpace
    fixed: dict[str, Any]  # canonical parameter name -> value: the trial side's defaults, then `train`
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    tracking_uri: str | None = None
    experiment: str | None = None
    promote: Promote = field(default_factory=Promote)
    path: Path | None = None
    text: str = ""  # the file as written; stored with the study
    # Metrics of the user's own, computed by Python functions (lorasweep.run(metrics=...)): their
    # names are valid study metrics; the functions themselves come with each run, not in the file.
    custom_metrics: tuple[str, ...] = ()
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict, repr=False)  # key path -> line

    def problems(self) -> Problems:
        """A collector for problems found after loading, located in this file."""
        return Problems(str(self.path), self.lines)

    def check_batch_fits(self, train_rows: int) -> None:
        """The largest training batch the sweep can sample must fit in the train split."""
        name = objectives.BATCH_SIZE
        largest = self.space.largest(name)
        if largest is None:
            largest = self.fixed.get(name, 8)
        if largest <= train_rows:
            return
        spellings = objectives.spellings(name)
        where = next(
            ((s, n) for s in ("search_space", "train") for n in spellings if (s, n) in self.lines), ("train",)
        )
        problems = self.problems()
        problems.add(
            where,
            f"the batch size must be at most the {train_rows} rows of the train split, but got "
            f"{name}={largest}. Use a smaller batch_size, or more data.",
        )
        problems.raise_if_any()


def load_sweep(
    path: str | Path, text: str | None = None, custom_metrics: Sequence[str] = (), *, stored: bool = False
) -> Sweep:
    """Read, check and resolve a sweep file. Raises SweepError listing every problem found.

    `text` stands in for the file's content (a sweep stored with its study); `path` still names it
    and anchors its relative data path. `custom_metrics` are names the study may also optimise
    (metrics the Python API computes with the user's functions). `stored`: the text was stored with
    an existing study, whose names were taken by the version that ran it: they are not checked again
    (a study that ran must stay resumable, promotable and exportable)."""
    path = Path(path)
    raw, lines, text = load_yaml(path, text)
    problems = Problems(str(path), lines, stored=stored)
    for key in raw:
        if key not in SECTIONS:
            problems.add((key,), unknown_key("top-level section", key, SECTIONS))
    fixed = _parse_train(raw.get("train"), problems)
    space = parse_space(raw.get("search_space"), problems, fixed)
    model, eval_ = _section(ModelSpec, raw, "model", problems), _section(EvalSpec, raw, "eval", problems)
    data = _parse_data(raw, path, problems)
    # eval.metrics: the user's functions by import path, checked (imported) unless stored
    custom_metrics = tuple(dict.fromkeys([*custom_metrics, *eval_.metrics]))
    for name, wrong in objectives.metric_problems(eval_, path.parent, load=not stored):
        problems.add(("eval", "metrics", name), wrong)
    study = _parse_study(raw, path, problems, space, custom_metrics, eval_.metric_directions(), stored=stored)
    tracking = _section(Tracking, raw, "tracking", problems)
    _check_tracking(tracking, problems, stored)
    urls = (("study", "storage"), study.storage), (("tracking", "uri"), tracking.uri)
    _check_no_secrets((*urls, (("data", "path"), data.path)), problems)
    promote = _section(Promote, raw, "promote", problems)
    _check_consistency(study, data, problems, custom_metrics)
    _check_train(fixed, space, problems)
    problems.raise_if_any()
    return Sweep(
        study=study,
        space=space,
        fixed={**objectives.DEFAULTS, **fixed},
        model=model,
        data=data,
        eval=eval_,
        tracking_uri=tracking.uri,
        experiment=tracking.experiment,
        promote=promote,
        path=path,
        text=text,
        lines=lines,
        custom_metrics=custom_metrics,
    )


def _section(model: type[M], raw: dict[str, Any], name: str, problems: Problems) -> M:
    """A section as its model; a key whose value is wrong keeps its default."""
    given = raw.get(name)
    return check(model, {} if given is None else given, problems, (name,)) or model()


def _check_tracking(tracking: Tracking, problems: Problems, stored: bool) -> None:
    """A local store makes the experiment a folder (its artifacts); a server names it as it likes
    (team/demo, /Users/x@y/exp). A --tracking-uri flag the file cannot see: run_sweep checks it."""
    if tracking.experiment is not None and is_local(tracking_uri(None, tracking.uri)) and not stored:
        wrong = name_problem("tracking.experiment", tracking.experiment)
        if wrong is not None:
            problems.add(("tracking", "experiment"), wrong)


def _check_no_secrets(urls: Iterable[tuple[tuple[str, str], str | None]], problems: Problems) -> None:
    """The file is stored with the study and logged to MLflow: no URL in it may hold a secret."""
    for where, url in urls:
        if url and redact(url) != url:
            fix = (
                "Serve the file without credentials in its URL, or copy it here."
                if where[0] == "data"
                else "Pass the URL with the password as a flag or through the environment."
            )
            problems.add(
                where, f"{'.'.join(where)} must not hold a password or token, but got {redact(url)}. {fix}"
            )


def _check_train(fixed: dict[str, Any], space: SearchSpace, problems: Problems) -> None:
    """The rules across knobs (the trial side's), and early stopping's need for evaluations."""
    for problem in objectives.fixed_problems({**objectives.DEFAULTS, **fixed}):
        problems.add(("train",), problem)
    early = [n for n in (*fixed, *space.searched()) if objectives.target_of(n) == "early_stopping"]
    if early and fixed.get("eval_strategy", "steps") == "no":
        problems.add(
            ("train", "eval_strategy"),
            f"early stopping needs evaluations, but got eval_strategy='no' with {', '.join(early)}. "
            "Remove eval_strategy (lorasweep evaluates every eval_steps) or the early-stopping keys.",
        )


def _parse_train(raw: Any, problems: Problems) -> dict[str, Any]:
    given, fixed = mapping(raw, "train", "TrainingArguments/LoraConfig fields to fixed values", problems), {}
    for name, value in given.items():
        canonical = objectives.canonical(str(name))
        if objectives.target_of(canonical) is None:
            problems.add(("train", name), objectives.unknown_name_message(str(name)))
            problems.note(objectives.valid_names_text())
        elif canonical in fixed:
            twice = f"{name!r} and another alias of {canonical!r}"
            problems.add(("train", name), f"each parameter must be set once, but got {twice}. Keep one.")
        elif (wrong := objectives.type_problem(canonical, value)) is not None:
            problems.add(("train", name), wrong)
        else:
            fixed[canonical] = value
    return fixed


def _parse_study(
    raw: dict[str, Any],
    path: Path,
    problems: Problems,
    space: SearchSpace,
    custom: tuple[str, ...],
    custom_directions: dict[str, Literal["minimize", "maximize"]],
    *,
    stored: bool,
) -> StudySpec:
    """The study, from the study section and the Olive material's search_strategy, in named steps."""
    strategy = _section(SearchStrategy, raw, "search_strategy", problems)
    study = _section(Study, raw, "study", problems)
    metrics = _metrics(study, custom, problems)
    sampler, seed, options = _sampler(study, strategy, problems)
    if space.conditions:
        options = conditional_options(sampler, options)
    _check_sampler_fits(sampler, metrics, space, problems)
    name = study.name if study.name is not None else path.stem
    if not stored and (wrong := name_problem("study.name", name)) is not None:
        problems.add(("study", "name"), wrong)  # at the study section's line where no name is written
    _check_lr_range_test(study, space, problems)
    if study.warm_start is not None and not stored:
        _check_warm_start(study.warm_start, name, problems)
    pruner = study.pruner if isinstance(study.pruner, str | None) else study.pruner.model_dump()
    return StudySpec(
        **study.model_dump(include={"timeout", "storage", "retries", "lr_range_test", "warm_start"}),
        name=name,
        metrics=metrics,
        directions=_directions(study, metrics, custom, problems, custom_directions),
        sampler=sampler,
        sampler_options=options,
        seed=seed,
        n_trials=_budget(study, strategy, problems),
        pruner=parse_pruner(pruner, problems, len(metrics)),
    )


def _metrics(study: Study, custom: tuple[str, ...], problems: Problems) -> tuple[str, ...]:
    """study.metrics (or metric): the built-in metrics and the Python API's custom ones."""
    given = study.metrics if study.metric is None or "metrics" in study.model_fields_set else study.metric
    metrics = given if isinstance(given, tuple) else (given,)
    if not metrics:  # a study with no objective would run trials that Optuna cannot rank
        where = _where(study, "metrics", "metric")
        problems.add(
            where,
            f"study.{where[1]} must name at least one metric, but got {where[1]}=[]. "
            "Example: metrics: eval_loss, or metrics: [f1, eval_loss].",
        )
        return ("eval_loss",)
    for m in metrics:
        if m not in METRICS and m not in custom:
            problems.add(
                _where(study, "metrics", "metric"), unknown_key("a study metric", m, [*METRICS, *custom])
            )
    return metrics


def _where(study: Study, plural: str, singular: str) -> tuple[str, str]:
    given = study.model_fields_set
    return ("study", singular if singular in given and plural not in given else plural)


def _directions(
    study: Study,
    metrics: tuple[str, ...],
    custom: tuple[str, ...],
    problems: Problems,
    custom_directions: dict[str, Literal["minimize", "maximize"]],
) -> tuple[Literal["minimize", "maximize"], ...]:
    """One per metric: as written, else each metric's own (a custom metric must say its own, in
    study.directions or beside its path in eval.metrics)."""
    given = study.directions if study.directions is not None else study.direction
    known = {**METRICS, **custom_directions}
    if given is None:
        for m in metrics:
            if m in custom and m not in known:  # a function of the user's: which way is better?
                problems.add(
                    _where(study, "metrics", "metric"),
                    f"a custom metric must come with its direction, but got metric {m!r} and no "
                    "study.directions. Add directions: [maximize] (or minimize), one per metric.",
                )
        return tuple(known.get(m, "minimize") for m in metrics)
    directions = given if isinstance(given, tuple) else (given,)
    if len(directions) != len(metrics):
        problems.add(
            _where(study, "directions", "direction"),
            f"study directions must be minimize or maximize, one per metric, but got "
            f"metrics={list(metrics)}, directions={list(directions)}.",
        )
    return directions


def _sampler(
    study: Study, strategy: SearchStrategy, problems: Problems
) -> tuple[str, int | None, dict[str, Any]]:
    """(name, seed, the Optuna sampler's own options): study.sampler or search_strategy.type, once."""
    given = study.sampler
    name, seed, options = (
        (given, 0, {}) if isinstance(given, str) else (given.type, given.seed, given.model_extra or {})
    )
    if "sampler" not in study.model_fields_set:
        name = strategy.type
    elif "type" in strategy.model_fields_set and name != strategy.type:
        problems.add(
            ("study", "sampler"),
            f"the sampler must be named once, but got "
            f"search_strategy.type={strategy.type!r} and study.sampler={name!r}. Keep one.",
        )
    return name, seed, parse_sampler_options(name, options, problems) if options else {}


def _check_sampler_fits(
    sampler: str, metrics: tuple[str, ...], space: SearchSpace, problems: Problems
) -> None:
    if sampler == "grid" and space.grid() is None:
        continuous = [n for n, d in space.distributions.items() if grid_points(d) is None]
        problems.add(
            ("search_space",),
            f"a grid sampler needs a finite space, but got continuous "
            f"ranges: {', '.join(continuous)}. Give them a step, or use choice values.",
        )
    if sampler == "grid" and space.conditions:
        problems.add(
            ("study", "sampler"),
            "the grid sampler must search a space without conditions (Optuna's GridSampler has none: it "
            "would run each configuration again for every value of a parameter the trial leaves out), "
            f"but got when: on {', '.join(map(written_name, space.conditions))}. Use random or tpe (a finite "
            "space still runs each configuration at most once), or drop the when: clauses.",
        )
    if sampler == "cmaes" and len(metrics) > 1:
        problems.add(
            ("study", "sampler"),
            "the cmaes sampler must optimise one metric, but got "
            f"metrics={list(metrics)}. Use tpe or nsgaii for several metrics.",
        )


def _budget(study: Study, strategy: SearchStrategy, problems: Problems) -> int:
    """study.n_trials or search_strategy.num_trials, given once."""
    both = {"n_trials"} <= study.model_fields_set and {"num_trials"} <= strategy.model_fields_set
    if both and study.n_trials != strategy.num_trials:
        problems.add(
            ("study", "n_trials"),
            f"the trial budget must be given once, but got "
            f"study.n_trials={study.n_trials} and search_strategy.num_trials={strategy.num_trials}.",
        )
    return study.n_trials if "n_trials" in study.model_fields_set else strategy.num_trials


def _check_lr_range_test(study: Study, space: SearchSpace, problems: Problems) -> None:
    dist = space.distributions.get("learning_rate")
    if study.lr_range_test and (
        not isinstance(dist, optuna.distributions.FloatDistribution) or dist.step is not None
    ):
        problems.add(
            ("study", "lr_range_test"),
            "study.lr_range_test must narrow a searched learning rate, but got "
            f"learning_rate={'not searched' if dist is None else 'a choice or a stepped range'}. "
            "Search it as {type: float, low: ..., high: ..., log: true}, or remove lr_range_test.",
        )


def _check_warm_start(warm_start: str, name: str, problems: Problems) -> None:
    wrong = name_problem("study.warm_start", warm_start)
    if wrong is None and warm_start == name:
        wrong = (
            f"study.warm_start must name another study, but got warm_start={warm_start!r}, this "
            "study's own name. Name an earlier study, or remove warm_start (a rerun continues anyway)."
        )
    if wrong is not None:
        problems.add(("study", "warm_start"), wrong)


def stored_sweep(study: optuna.Study) -> Sweep:
    """The sweep a study was started with, from the file text stored on it (for `resume` and
    `worker`): the file on disk may have changed or gone since."""
    stored = StudyRecord.of(study)
    if stored.sweep_text is None:
        raise UserError(
            f"a study to resume or join must have been started by lorasweep, but study {study.study_name!r} "
            "holds no sweep file. Run it with: lorasweep run FILE --study NAME."
        )
    sweep = load_sweep(study_sweep_file(study), stored.sweep_text, stored.custom_metrics, stored=True)
    return dataclasses.replace(sweep, tracking_uri=stored_tracking_uri(study) or sweep.tracking_uri)


def promote_spec(text: str, path: str = "the stored sweep file") -> Promote:
    """The promote section alone, from a sweep file's text: what `best` needs, without the data
    checks that a whole load_sweep does (the data may have moved since the sweep ran)."""
    raw, lines, _ = load_yaml(Path(path), text)
    problems = Problems(path, lines, stored=True)  # the text stored with a study that ran
    spec = _section(Promote, raw, "promote", problems)
    problems.raise_if_any()
    return spec


def _parse_data(raw: dict[str, Any], path: Path, problems: Problems) -> DataSpec:
    """The data section; a file path in it is taken relative to the sweep file's folder."""
    given = _section(DataSpec, raw, "data", problems)
    # The built-in templates are the built-in tone data's: any other data, builtin:tone_chat included,
    # starts from none.
    own = given.path != DataSpec().path
    base = objectives.USER_DATA if own else DataSpec()
    data = base.model_copy(update={k: getattr(given, k) for k in given.model_fields_set})
    if data.text_template is not None:
        if {"prompt_template", "response_template"} & given.model_fields_set:
            problems.add(
                ("data", "text_template"),
                "data must use text_template alone or the "
                "prompt_template/response_template pair, but got both. Keep one.",
            )
        data = data.model_copy(update={"prompt_template": None, "response_template": None})
    if own and not data.path:
        problems.add(
            ("data",),
            "data.path must name a file or a hub id, but got none. Example: data: {path: data/train.jsonl}.",
        )
    if data.is_url:  # datasets reads it from the server, at run time
        return data
    local = Path(data.path) if Path(data.path).is_absolute() else path.parent / data.path
    if data.path.lower().endswith(objectives.DATA_SUFFIXES):
        data = data.model_copy(update={"path": str(local)})
        if not local.is_file():
            problems.add(
                ("data", "path"),
                f"data.path must be an existing file, but got "
                f"path={str(local)!r}. Relative paths start at the sweep file's folder.",
            )
    elif data.path and local.is_file():
        problems.add(("data", "path"), objectives.WRONG_KIND_OF_FILE.format(path=data.path))
    return data


def _check_consistency(study: StudySpec, data: DataSpec, problems: Problems, custom: tuple[str, ...]) -> None:
    for key, problem in data.problems():
        problems.add(("data",) if key is None else ("data", key), problem)
    if not data.has_prompts:
        for m in study.metrics:
            if m in objectives.GENERATION_METRICS or m in custom:
                problems.add(
                    ("study",),
                    f"metric {m} needs prompts to generate from, but got "
                    f"data.text_template={data.text_template!r}, which has one field or text after its "
                    "last one. End the template with the response's field (an end marker such as "
                    "<|eot_id|> may follow), use prompt_template and response_template, or optimise "
                    "eval_loss.",
                )
