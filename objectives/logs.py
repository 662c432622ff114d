"""The trial side's libraries, told to say only errors: their progress bars and notes would drown
the study's one line per trial."""

from __future__ import annotations

import logging
import os


def quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("datasets").setLevel(logging.CRITICAL)  # its load errors come back as InputError
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars
    datasets.disable_progress_bars()
