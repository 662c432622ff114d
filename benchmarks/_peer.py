"""The peer of benchmarks/peer_race.py: the race's search done the way a competent user of
transformers' `Trainer.hyperparameter_search(backend="optuna")` would, with transformers, peft,
datasets and Optuna only (no lorasweep import: peer_race.py copies this file into a fresh folder and
runs it there as a script of its own).

    python peer.py --base TINY_DIR --train train.jsonl --eval eval.jsonl --out DIR
                   [--configs configs.json] [--timeline timeline.json]

The same task as the race's sweep file: the prompt and response templates, prompt + response + eos
cut at 64 tokens, loss on the response tokens only (prompt labels -100), padded by
DataCollatorForSeq2Seq; the rows of lorasweep's own stratified 80/20 split, written by peer_race.py
to train.jsonl and eval.jsonl. `model_init` returns a fresh peft model per trial: the base loaded
from its folder, LoRA on all linear layers. Training as lorasweep's defaults set it (100 steps, an
evaluation every 50, a log every 10, lr schedule linear without warmup, eval batch 32, LoRA dropout
0.05, no checkpoints). The objective is the Trainer's: the eval loss of the last evaluation. No
pruner (Optuna's default would be a MedianPruner) and TPE seeded with 0.

With --configs (a JSON list of parameter dicts), those configurations are enqueued on the study
before the search, so the peer trains exactly the trials lorasweep drew; without, TPE draws its own.
--timeline writes when the imports, the data, the Trainer and each trial were done (epoch seconds).

--own-defaults is the second race: --n-trials trials drawn by Optuna's default TPE (unseeded, as
hyperparameter_search makes it), still no pruner. Its trials are ranked by the Trainer's eval_loss,
which is not lorasweep's number (the Trainer repeats each eval batch's mean loss batch-size times,
the last short batch too, and averages; lorasweep's is the mean per response token), so with
--exact-loss each trial's final model is also scored per token, as lorasweep scores it, on the same
batches; the seconds that takes are written to the timeline, for peer_race.py to take off the
peer's clock.
"""

import time

STARTED = time.time()

# After STARTED: the imports are part of what is timed.
import argparse
import json

import datasets
import optuna
import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

IMPORTED = time.time()

PROMPT = "Phrase: {phrase}\nTone:"
RESPONSE = " {tone}, about the {topic}"
MAX_LENGTH = 64
N_TRIALS = 4


def suggest(trial: optuna.Trial) -> dict:
    """The search space, in the sweep file's order. Called by model_init and hp_space alike: Optuna
    returns a trial's value again when the same name is suggested twice."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-2, log=True),
        "lora_r": trial.suggest_categorical("lora_r", [2, 4, 8, 16]),
        "lora_alpha_per_rank": trial.suggest_categorical("lora_alpha_per_rank", [1, 2]),
        "batch_size": trial.suggest_categorical("batch_size", [8, 16, 32]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--base", "--train", "--eval", "--out"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--configs")
    parser.add_argument("--timeline")
    parser.add_argument("--n-trials", type=int, default=N_TRIALS)
    parser.add_argument("--own-defaults", action="store_true", help="Optuna's default (unseeded) TPE")
    parser.add_argument("--exact-loss", action="store_true", help="score each trial per token too")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def encode(row: dict) -> dict:
        prompt = tokenizer(PROMPT.format(**row))["input_ids"]
        response = tokenizer(RESPONSE.format(**row), add_special_tokens=False)["input_ids"]
        response = [*response, tokenizer.eos_token_id]
        ids = (prompt + response)[:MAX_LENGTH]
        labels = ([-100] * len(prompt) + response)[:MAX_LENGTH]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    rows = datasets.load_dataset("json", data_files={"train": args.train, "eval": args.eval})
    data = rows.map(encode, remove_columns=rows["train"].column_names)
    data_ready = time.time()

    def model_init(trial: optuna.Trial | None = None):
        base = AutoModelForCausalLM.from_pretrained(args.base)
        base.config.use_cache = False
        p = suggest(trial) if trial is not None else {"lora_r": 8, "lora_alpha_per_rank": 2}
        config = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            target_modules="all-linear",
            r=p["lora_r"],
            lora_alpha=p["lora_r"] * p["lora_alpha_per_rank"],
            lora_dropout=0.05,
        )
        return get_peft_model(base, config)

    def hp_space(trial: optuna.Trial) -> dict:
        p = suggest(trial)
        return {"learning_rate": p["learning_rate"], "per_device_train_batch_size": p["batch_size"]}

    training = TrainingArguments(
        output_dir=args.out,
        max_steps=100,
        eval_strategy="steps",
        eval_steps=50,
        logging_steps=10,
        per_device_eval_batch_size=32,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    exact: list[dict] = []  # per trial: the per-token eval loss and the seconds it took

    class ExactLoss(TrainerCallback):
        """After training: the mean NLL per response token over the eval split (not timed as the peer's)."""

        @torch.no_grad()
        def on_train_end(self, args_, state, control, model=None, **kwargs):
            started = time.time()
            model.eval()
            rows = data["eval"].to_list()
            nll, tokens = 0.0, 0
            for i in range(0, len(rows), 32):
                batch = collator(rows[i : i + 32])
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                target = batch["labels"][:, 1:]
                nll += float(
                    torch.nn.functional.cross_entropy(
                        logits[:, :-1].float().transpose(1, 2), target, ignore_index=-100, reduction="sum"
                    )
                )
                tokens += int((target != -100).sum())
            exact.append({"loss": nll / max(tokens, 1), "seconds": time.time() - started})

    trainer = Trainer(
        model_init=model_init,
        args=training,
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[ExactLoss()] if args.exact_loss else None,
    )
    trainer_ready = time.time()

    # The study is made here, not inside hyperparameter_search, only so that --configs can be
    # enqueued on it and the trials' times read back; hyperparameter_search loads it by name.
    storage = optuna.storages.InMemoryStorage()
    search = {
        "study_name": "peer",
        "storage": storage,
        "sampler": optuna.samplers.TPESampler() if args.own_defaults else optuna.samplers.TPESampler(seed=0),
        "pruner": optuna.pruners.NopPruner(),
    }
    study = optuna.create_study(direction="minimize", **search)
    if args.configs:
        with open(args.configs) as f:
            for params in json.load(f):
                study.enqueue_trial(params)
    best = trainer.hyperparameter_search(
        direction="minimize",
        backend="optuna",
        hp_space=hp_space,
        n_trials=args.n_trials,
        load_if_exists=True,
        **search,
    )
    searched = time.time()
    print(f"best: trial {best.run_id} eval_loss={best.objective:.4g} {best.hyperparameters}")
    if args.timeline:
        trials = [
            {
                "number": t.number,
                "start": t.datetime_start.timestamp(),
                "end": t.datetime_complete.timestamp(),
                "params": t.params,
                "value": t.value,
                **({"exact_loss": exact[i]["loss"], "exact_seconds": exact[i]["seconds"]} if exact else {}),
            }
            for i, t in enumerate(study.trials)
        ]
        timeline = {
            "start": STARTED,
            "imported": IMPORTED,
            "data_ready": data_ready,
            "trainer_ready": trainer_ready,
            "searched": searched,
            "trials": trials,
        }
        with open(args.timeline, "w") as f:
            json.dump(timeline, f)


if __name__ == "__main__":
    main()
