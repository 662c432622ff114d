"""What a trial's adapter folder says about itself, so that it travels: the base it was trained on
named the way anyone can load it, and a model card with the trial's parameters, data and metrics
(in place of peft's empty template).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import TINY_BASE_NAME, TrialSpec
from .specs import DataSpec, ModelSpec


def describe_adapter(folder: Path, model: ModelSpec, data: DataSpec, trial: TrialSpec, metrics: dict) -> None:
    """Rewrite the base peft recorded (for the tiny base, an absolute path into this install)
    as the sweep file names it, and write the model card."""
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = model.base
    config["revision"] = model.revision
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(_card(model, data, trial, metrics), encoding="utf-8")


def _card(model: ModelSpec, data: DataSpec, trial: TrialSpec, metrics: dict[str, Any]) -> str:
    base = model.base + (f" (revision {model.revision})" if model.revision else "")
    if model.base == TINY_BASE_NAME:
        from .tiny import SHIPPED_SHA256

        base += (
            ": lorasweep's embedded base, shipped with lorasweep as the same bytes on every machine "
            f"(lorasweep.objectives.tiny; weights sha256 {SHIPPED_SHA256['model.safetensors'][:12]})"
        )
    rows = [
        *(
            f"| {k} | {v} |"
            for k, v in {**trial.training_args, **trial.lora_args, **trial.early_stopping}.items()
        ),
        f"| seed | {trial.seed} |",
    ]
    if data.conversational:
        templates = "rows of turns, rendered by the tokenizer's chat template (loss on the assistant turns)"
    elif data.text_template:
        templates = f"text_template `{data.text_template}`"
    else:
        templates = f"prompt `{data.prompt_template!r}`, response `{data.response_template!r}`"
    evaluated = data.eval_split or f"{data.eval_fraction:.0%} of train"
    scores = "\n".join(f"| {k} | {v:.6g} |" for k, v in metrics.items())
    return f"""---
base_model: {model.base}
library_name: peft
tags: [lora, lorasweep]
---

# A LoRA adapter found by lorasweep

- **Base model**: {base}
- **Method**: {model.method}, target modules {model.target_modules}
- **Data**: {data.path}, train `{data.train_split}`, eval `{evaluated}`;
  {templates}; at most {data.max_length} tokens an example

## Parameters

| parameter | value |
| --- | --- |
{chr(10).join(rows)}

## Metrics on the eval split

| metric | value |
| --- | --- |
{scores}

Load it with peft: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), "adapter")`.
"""
