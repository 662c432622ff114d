"""The trial side's libraries, told to say only errors: their progress bars and notes would drown
the study's one line per trial.

Said through their environment variables, which they read when they load, so that telling them
loads none of them (`lorasweep trials` never needs transformers); a library loaded already is
told directly. That is for a process of lorasweep's own (the CLI); the Python API, in a process
that is the user's, quiets them for one call with `libraries_quieted`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("datasets").setLevel(logging.CRITICAL)  # its load errors come back as InputError
    if "transformers" in sys.modules:
        transformers = sys.modules["transformers"]
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


@contextlib.contextmanager
def libraries_quieted() -> Iterator[None]:
    """The trial side's libraries quiet (errors only, no progress bars) for the length of a call,
    then as the caller had them: a notebook keeps its own settings after `lorasweep.run` returns.

    Said through the libraries' own switches, not their environment variables: a variable is read
    once, when the library loads, so setting one here would outlive the call. This loads
    transformers' and datasets' logging (not torch): only calls that train or export use it.
    """
    import datasets
    import huggingface_hub.utils as hub
    import transformers.utils.logging as transformers_logging

    peft = logging.getLogger("peft")
    before = (
        transformers_logging.get_verbosity(),
        transformers_logging.is_progress_bar_enabled(),
        datasets.logging.get_verbosity(),
        datasets.is_progress_bar_enabled(),
        hub.are_progress_bars_disabled(),
        peft.level,
    )
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # "Loading weights"; it turns the hub's bars off too
    datasets.logging.set_verbosity(logging.CRITICAL)  # its load errors come back as InputError
    datasets.disable_progress_bars()  # tokenizing with .map
    peft.setLevel(logging.ERROR)
    try:
        yield
    finally:
        verbosity, bars, data_verbosity, data_bars, hub_off, peft_level = before
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
        datasets.logging.set_verbosity(data_verbosity)
        if data_bars:
            datasets.enable_progress_bars()
        if not hub_off:  # last: transformers' switch turns the hub's on and off with its own
            hub.enable_progress_bars()
        else:
            hub.disable_progress_bars()
        peft.setLevel(peft_level)
