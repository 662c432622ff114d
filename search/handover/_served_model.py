"""The registered model: a promoted trial's base + LoRA adapter behind MLflow's pyfunc interface.

MLflow copies this file into every registered version ("models from code") and runs it when the
version is loaded, so it imports nothing from lorasweep: a version loads wherever torch,
transformers and peft are installed, whatever happens to this package later.

    model = mlflow.pyfunc.load_model("models:/NAME@champion")
    model.predict(["Phrase: what a great seat\\nTone:"], params={"max_new_tokens": 12})
    -> ["positive, about the seat"]

A version of several trials (an adapter bundle) holds each trial's adapter under its name
(trial-3, ...) and takes the one to generate with as a param: params={"adapter": "trial-3"} (or
just 3); the first, the best, is the default.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc.model import PythonModel  # its home: mlflow.pyfunc does not re-export it


class AdapterGenerator(PythonModel):
    """Prompts in, greedy generations out (the continuation only, stripped), from the adapter the
    `adapter` param names."""

    def load_context(self, context) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(context.artifacts["base"])
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        base = AutoModelForCausalLM.from_pretrained(context.artifacts["base"])
        adapters = {name: path for name, path in context.artifacts.items() if name != "base"}
        (self.default, first), *others = adapters.items()
        self.model = PeftModel.from_pretrained(base, first, adapter_name=self.default)
        for name, path in others:
            self.model.load_adapter(path, adapter_name=name)
        self.model.to(self.device).eval()

    def _use(self, adapter) -> None:
        name = self.default if adapter in (None, "") else str(adapter)
        name = f"trial-{name}" if name.isdigit() else name
        if name not in self.model.peft_config:
            raise ValueError(
                f"params.adapter must be one of {', '.join(self.model.peft_config)}, "
                f"but got adapter={adapter!r}"
            )
        self.model.set_adapter(name)

    # model_input: MLflow turns a list of prompts into a one-column DataFrame (the signature's input)
    # before it gets here. The DataFrame hint tells MLflow to keep that signature, not infer one.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        prompts = [str(p) for p in model_input.iloc[:, 0]]
        params = params or {}
        self._use(params.get("adapter"))
        outputs: list[str] = []
        batch = int(params.get("batch_size", 16))
        for start in range(0, len(prompts), batch):
            enc = self.tokenizer(
                prompts[start : start + batch], return_tensors="pt", padding=True, padding_side="left"
            ).to(self.device)
            with self.torch.no_grad():
                generated = self.model.generate(
                    **enc,
                    max_new_tokens=int(params.get("max_new_tokens", 16)),
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
            new = generated[:, enc["input_ids"].shape[1] :]
            outputs += [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return outputs


mlflow.models.set_model(AdapterGenerator())
