"""lorasweep: find the best LoRA fine-tune of a small language model.

From Python, the CLI's operations with its defaults, raising its errors as exceptions
(search/api.py has the details):

    import lorasweep

    study = lorasweep.run("spaces/demo.yaml", trials=4)
    lorasweep.trials(study)      # a pandas DataFrame, one row per trial
    lorasweep.best(study)        # the trial promote hands over, and its adapter's URI
    lorasweep.promote(study)     # registry, ONNX exports, parity gate, champion alias
    lorasweep.report(study)      # the plots as one HTML page; returns its path

The code lives in lorasweep.search (the study side: search/) and lorasweep.objectives (the trial
side: objectives/). `import lorasweep` loads neither torch nor Optuna: each name loads its
module when first used.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorasweep.objectives import InputError
    from lorasweep.search.api import (
        Best,
        best,
        compare,
        delete,
        export,
        promote,
        report,
        resume,
        run,
        studies,
        trials,
    )
    from lorasweep.search.errors import ExportFailed, SweepError, SweepStopped, UserError

# One version source: pyproject.toml's `version`, as the installed package's metadata carries it.
__version__ = version("lorasweep")

# Written out, not built from the tuples below, so that static tools (mypy, IDEs, the manual's
# API pages) read the public names without running this module.
__all__ = [
    "Best",
    "ExportFailed",
    "InputError",
    "SweepError",
    "SweepStopped",
    "UserError",
    "__version__",
    "best",
    "compare",
    "delete",
    "export",
    "promote",
    "report",
    "resume",
    "run",
    "studies",
    "trials",
]

_API = (
    "run",
    "resume",
    "trials",
    "best",
    "compare",
    "promote",
    "export",
    "report",
    "studies",
    "delete",
    "Best",
)
_ERRORS = ("UserError", "SweepError", "SweepStopped", "ExportFailed")


def __getattr__(name: str) -> Any:
    """Each public name loads its module when first used: `import lorasweep` stays free of torch."""
    if name in _API:
        return getattr(importlib.import_module("lorasweep.search.api"), name)
    if name in _ERRORS:
        return getattr(importlib.import_module("lorasweep.search.errors"), name)
    if name == "InputError":
        return importlib.import_module("lorasweep.objectives").InputError
    raise AttributeError(f"module 'lorasweep' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, which mostly load lazily, so that `dir(lorasweep)` and tab completion list
    them (and not this module's own imports)."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
