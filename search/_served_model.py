"""The registered model: a promoted trial's base + LoRA adapter behind MLflow's pyfunc interface.

MLflow copies this file into every registered version ("models from code") and runs it when the
version is loaded, so it imports nothing from lorasweep: a version loads wherever torch,
transformers and peft are installed, whatever happens to this package later.

    model = mlflow.pyfunc.load_model("models:/NAME@champion")
    model.predict(["Phrase: what a great seat\\nTone:"], params={"max_new_tokens": 12})
    -> ["positive, about the seat"]
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class AdapterGenerator(PythonModel):
    """Prompts in, greedy generations out (the continuation only, stripped)."""

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
        self.model = PeftModel.from_pretrained(base, context.artifacts["adapter"]).to(self.device).eval()

    # model_input: MLflow turns a list of prompts into a one-column DataFrame (the signature's input)
    # before it gets here. The DataFrame hint tells MLflow to keep that signature, not infer one.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        prompts = [str(p) for p in model_input.iloc[:, 0]]
        params = params or {}
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
