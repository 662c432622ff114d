"""The sweep file: the YAML a user writes, loaded and checked whole into a frozen `Sweep`.

_yaml.py       the YAML loader with a line for every key, so each problem names its place
_models.py     one pydantic model per section (model, data, eval: objectives/specs.py):
               every key, its type, default and description
_sweep.py      load_sweep / stored_sweep: the sections, checked together -> Sweep
_space.py      search_space: Optuna distributions, their `when:` conditions and sampling order, grid
               points and valid configurations, the lora_alpha tie
_reference.py  the JSON Schema and the reference page, generated from the models

`python -m lorasweep.search.sweepfile` writes spaces/sweep-file.schema.json and
docs/reference/sweep-file.md from the models.
"""

from __future__ import annotations

from ._models import Promote as PromoteSpec
from ._models import name_problem
from ._reference import json_schema, reference_markdown
from ._space import SearchSpace, alpha_tie, describe, stored_alpha_tie
from ._sweep import StudySpec, Sweep, load_sweep, promote_spec, stored_sweep

__all__ = [
    "PromoteSpec",
    "SearchSpace",
    "StudySpec",
    "Sweep",
    "alpha_tie",
    "describe",
    "json_schema",
    "load_sweep",
    "name_problem",
    "promote_spec",
    "reference_markdown",
    "stored_alpha_tie",
    "stored_sweep",
]
