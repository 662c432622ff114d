"""The same trial without lorasweep, as a user would script it: the yardsticks of benchmarks/bench.py.

`bare_trial` is a plain transformers Trainer script: a fresh LoRA adapter (peft), the Trainer with the
same settings as the sweep's trial (evaluating every eval_steps), a final evaluation, batched greedy
generation on the same eval prompts scored with rouge-score and scikit-learn, the adapter saved. No
sampling, no tracking, no callbacks of lorasweep's.

`bare_loop` is the training alone, in plain PyTorch + peft: the batches the Trainer would draw, forward,
backward, gradient clipping, fused AdamW and the linear schedule, as the Trainer's defaults do them.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from rouge_score import rouge_scorer
from sklearn.metrics import f1_score
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

from lorasweep.objectives import TrialSpec
from lorasweep.objectives.data import TaskData


@dataclass(frozen=True)
class BareResult:
    seconds: float  # the whole trial: adapter, Trainer, training, evaluation, generation, save
    train_seconds: float  # Trainer.train(), its evaluations included
    eval_seconds: float  # the evaluations inside Trainer.train()
    generate_seconds: float
    last_eval_loss: float  # the Trainer's eval_loss at the last step: the same work as lorasweep's?


def lora_config(spec: TrialSpec, target_modules: str) -> LoraConfig:
    return LoraConfig(task_type="CAUSAL_LM", target_modules=target_modules, **spec.lora_args)


def training_args(spec: TrialSpec, workdir: Path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(workdir),
        eval_strategy="steps",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=spec.seed,
        **spec.training_args,
    )


def bare_trial(
    base: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: TaskData,
    spec: TrialSpec,
    target_modules: str,
    max_samples: int,
    max_new_tokens: int,
    workdir: Path,
) -> tuple[BareResult, list[dict[str, torch.Tensor]]]:
    """One trial; also returns the training batches it drew, for bare_loop."""
    started = time.perf_counter()
    set_seed(spec.seed)
    model = get_peft_model(base, lora_config(spec, target_modules))
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(
        model=model,
        args=training_args(spec, workdir),
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator,
    )
    trainer.remove_callback(PrinterCallback)  # no log lines on stdout
    train_seconds = trainer.train().metrics["train_runtime"]
    history = trainer.state.log_history
    eval_seconds = sum(log.get("eval_runtime", 0.0) for log in history)
    last_eval_loss = [log["eval_loss"] for log in history if "eval_loss" in log][-1]
    trainer.evaluate()

    generating = time.perf_counter()
    outputs = _generate(model, tokenizer, data.eval_prompts[:max_samples], max_new_tokens)
    _score(outputs, data.eval_references[: len(outputs)], data.eval_labels[: len(outputs)])
    generate_seconds = time.perf_counter() - generating

    model.save_pretrained(workdir / "adapter")
    model.unload()
    seconds = time.perf_counter() - started
    result = BareResult(seconds, train_seconds, eval_seconds, generate_seconds, last_eval_loss)
    return result, _drawn_batches(trainer)


def _drawn_batches(trainer: Trainer) -> list[dict[str, torch.Tensor]]:
    """The batches the Trainer trained on, in order: its loader is seeded by args.seed and set to
    each epoch as Trainer.train does. Drawn after training: drawing consumes no global random state
    then, which would change the dropout masks."""
    loader, batches, epoch = trainer.get_train_dataloader(), [], 0
    while len(batches) < trainer.args.max_steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        batches += itertools.islice(loader, trainer.args.max_steps - len(batches))
        epoch += 1
    return batches


@torch.no_grad()
def _generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 32) -> list[str]:
    model.eval()
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(
            prompts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="left"
        )
        generated = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = generated[:, enc["input_ids"].shape[1] :]
        outputs += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return outputs


def _score(outputs: list[str], references: list[str], labels: list[str]) -> dict[str, float]:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, o) for o, r in zip(outputs, references, strict=True)]
    rouge = {k: sum(s[k].fmeasure for s in scores) / len(scores) for k in ("rouge1", "rouge2", "rougeL")}
    predicted = [(o.split(",")[0].split() or [""])[0] for o in outputs]  # "<tone>, about the <topic>"
    return {**rouge, "f1": float(f1_score(labels, predicted, average="macro", zero_division=0))}


@dataclass(frozen=True)
class LoopResult:
    seconds: float
    tokens: int  # non-padding tokens
    padded: int  # tokens with the padding: the batches' rows x their longest row
    rows: int


def bare_loop(
    base: PreTrainedModel, batches: list[dict[str, torch.Tensor]], spec: TrialSpec, target_modules: str
) -> LoopResult:
    """Training on `batches`, one optimiser step each."""
    args = spec.training_args
    set_seed(spec.seed)
    model = get_peft_model(base, lora_config(spec, target_modules))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args["learning_rate"], weight_decay=0.0, fused=True)
    warmup, total = args.get("warmup_steps", 0), len(batches)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)),
    )
    started = time.perf_counter()
    for batch in batches:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    model.unload()
    return LoopResult(
        seconds,
        tokens=sum(int(batch["attention_mask"].sum()) for batch in batches),
        padded=sum(batch["input_ids"].numel() for batch in batches),
        rows=sum(len(batch["input_ids"]) for batch in batches),
    )
