"""lorasweep: find the best LoRA fine-tune of a small language model.

From Python, the CLI's operations with its defaults, raising its errors as exceptions
(search/api.py has the details):

    import lorasweep

    study = lorasweep.run("spaces/demo.yaml", trials=4)
    lorasweep.trials(study)      # a pandas DataFrame, one row per trial
    lorasweep.best(study)        # the trial promote hands over, and its adapter's URI
    lorasweep.promote(study)     # registry, ONNX exports, parity gate, champion alias

The code lives in lorasweep.search (the study side: search/) and lorasweep.objectives (the trial
side: objectives/). `import lorasweep` loads neither torch nor Optuna: each name loads its
module when first used.
"""

from __future__ import annotations

import importlib
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
        resume,
        run,
        studies,
        trials,
    )
    from lorasweep.search.errors import ExportFailed, SweepError, SweepStopped, UserError

_API = ("run", "resume", "trials", "best", "compare", "promote", "export", "studies", "delete", "Best")
_ERRORS = ("UserError", "SweepError", "SweepStopped", "ExportFailed")


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("lorasweep.search.api"), name)
    if name in _ERRORS:
        return getattr(importlib.import_module("lorasweep.search.errors"), name)
    if name == "InputError":
        return importlib.import_module("lorasweep.objectives").InputError
    raise AttributeError(f"module 'lorasweep' has no attribute {name!r}")


__all__ = [*_API, *_ERRORS, "InputError"]
