"""The sweep file: the YAML a user writes, loaded and checked whole into a frozen `Sweep`.

_yaml.py     the YAML loader with a line for every key, so each problem names its place
_sweep.py    load_sweep / stored_sweep: the sections, checked together -> Sweep
_space.py    search_space: Optuna distributions, grid points, the lora_alpha tie
_promote.py  the promote section: the selection rule, the registered name, the gate's limits
_typed.py    typed sections checked key by key; the name rule for studies, models, experiments
"""

from __future__ import annotations

from ._promote import PromoteSpec
from ._space import SearchSpace, alpha_tie, describe, stored_alpha_tie
from ._sweep import StudySpec, Sweep, load_sweep, promote_spec, stored_sweep
from ._typed import name_problem

__all__ = [
    "PromoteSpec",
    "SearchSpace",
    "StudySpec",
    "Sweep",
    "alpha_tie",
    "describe",
    "load_sweep",
    "name_problem",
    "promote_spec",
    "stored_alpha_tie",
    "stored_sweep",
]
