"""One trial, as a recipe: fresh adapter -> train -> evaluate cheap (loss) -> evaluate expensive
(generation) -> save the adapter.

A `Recipe` holds what every trial of one process shares, the base model and the tokenized data, so
neither is loaded twice. It is the real TrialRunner (runner.py: the lifecycle and what the curve
hook may raise). Nothing here knows about Optuna or MLflow: learning curves go out through the
`on_curve` hook, results come back as a `TrialResult`.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from peft import PeftModel
from transformers import (
    DataCollatorForSeq2Seq,
    EarlyStoppingCallback,
    PreTrainedModel,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from . import data as data_lib
from .card import describe_adapter
from .config import CURVE_METRICS, TINY_BASE_NAME, TrialSpec
from .metrics import generation_metrics
from .model import add_adapter, base_identity, check_targets, load_base, place, remove_adapter
from .params import training_settings
from .resources import MemoryWatch
from .runner import BaseFootprint, CurveHook, LrRangeSpec, MetricFn, TrialResult, TrialTimedOut
from .scoring import perplexity, summed_nll
from .specs import DataSpec, EvalSpec, ModelSpec
from .tiny import fit_note

_T = TypeVar("_T", bound=Trainer)  # the Trainer class a range test or a trial builds


class Recipe:
    """Loads the base model and the data once; runs any number of trials on them."""

    def __init__(
        self,
        model: ModelSpec,
        data: DataSpec,
        eval: EvalSpec,
        log: Callable[[str], None] | None = None,
        metrics: Mapping[str, MetricFn] | None = None,
    ) -> None:
        self.model_spec, self.data_spec, self.eval_spec = model, data, eval
        self.custom_metrics = dict(metrics or {})  # scored beside ROUGE and F1 on the generations
        self.placement = place(model)
        train_rows, eval_rows = data_lib.load_rows(data)  # before the model: bad data fails fast
        self.base, self.tokenizer = load_base(model, self.placement, log)
        # Once, right after the load (the hub cache now resolves the revision to the commit loaded):
        # what every trial of this process trains on, which its run records for the hand-over.
        self.base_identity = base_identity(model.base, model.revision)
        check_targets(self.base, model)
        self.footprint = _footprint(self.base, self.placement.device)
        self.data = data_lib.tokenize(data, train_rows, eval_rows, self.tokenizer)
        if log is not None and (note := self.data.lost_note(data.max_length)):
            log(note)
        tiny = model.base == TINY_BASE_NAME
        if log is not None and tiny and (note := fit_note(self.data.eval["input_ids"], self.tokenizer)):
            log(note)
        # Generation prompts keep their last data.max_length tokens, where the cue to answer is: an
        # eval row of megabytes must not become a prompt of megabytes.
        self.tokenizer.truncation_side = "left"
        self._eval_rows = self.data.eval.to_list()  # read out of Arrow once, not per trial
        self.train_rows = len(self.data.train)
        self._collator = DataCollatorForSeq2Seq(self.tokenizer, padding=True, label_pad_token_id=-100)
        # What is loaded by now (the libraries, the base, the data) lives as long as the process. Out
        # of the collector's sight, a full collection (once per trial, below; and the ones Python
        # starts by itself while training) scans only what came after, not the ~600k objects that
        # torch, transformers, Optuna and MLflow hold (0.5-2 s a time).
        gc.collect()
        gc.freeze()
        self._frozen_after_first_trial = False

    # -- the recipe ------------------------------------------------------------------------------
    def run_trial(
        self,
        trial: TrialSpec,
        workdir: Path,
        on_curve: CurveHook | None = None,
        deadline: float | None = None,
    ) -> TrialResult:
        finished = False
        try:
            result = self._run(trial, workdir, on_curve, deadline)
            finished = True
            return result
        finally:
            # The trial's Trainer, optimizer and adapter sit in reference cycles: collect them here,
            # once _run's frame (which holds them) is gone (cheap: see gc.freeze in __init__;
            # Optuna's gc_after_trial stays off).
            gc.collect()
            if finished and not self._frozen_after_first_trial:
                # What the first trial loaded on first use lives as long as the process too: the
                # MLflow store (SQLAlchemy's ~150k objects), the Trainer's lazy imports. Frozen
                # with the rest, a full collection takes 2 ms instead of 150 ms. (Not after a
                # failure: its traceback still holds the trial's objects.)
                gc.freeze()
                self._frozen_after_first_trial = True
            if self.placement.device == "cuda":  # after an out-of-memory error above all
                torch.cuda.empty_cache()

    def _run(
        self, trial: TrialSpec, workdir: Path, on_curve: CurveHook | None, deadline: float | None
    ) -> TrialResult:
        memory = MemoryWatch(cuda=self.placement.device == "cuda")
        memory.start()
        set_seed(trial.seed)  # the adapter's initial weights and the data order
        model = add_adapter(self.base, self.model_spec, trial.lora_args)
        try:
            trainable, total = model.get_nb_trainable_parameters()
            trainer = self._trainer(model, trial, workdir, on_curve, deadline)
            output = trainer.train()
            train_seconds = output.metrics["train_runtime"]
            eval_seconds = sum(log.get("eval_runtime", 0.0) for log in trainer.state.log_history)
            training_seconds = train_seconds - eval_seconds  # what throughput is measured over
            tokens = int(trainer.state.num_input_tokens_seen)

            _check_deadline(deadline, trainer.state.global_step)  # generation can take minutes too
            metrics = self._final_loss(trainer, trial) or self._loss_metrics(model)
            samples: list[dict[str, str]] = []
            generating = time.perf_counter()
            if trial.generate and self.data.eval_prompts:
                generated, samples = self._generation_metrics(model)
                metrics.update(generated)
            generate_seconds = time.perf_counter() - generating

            adapter_dir = workdir / "adapter"
            model.save_pretrained(str(adapter_dir))
            describe_adapter(adapter_dir, self.model_spec, self.data_spec, trial, metrics)
            peak = memory.peak()
            return TrialResult(
                metrics=metrics,
                adapter_dir=adapter_dir,
                samples=samples,
                trainable_params=trainable,
                total_params=total,
                train_seconds=train_seconds,
                eval_seconds=eval_seconds,
                generate_seconds=generate_seconds,
                tokens=tokens,
                tokens_per_second=tokens / training_seconds if training_seconds > 0 else 0.0,
                steps=trainer.state.global_step,
                best_step=trainer.state.best_global_step if trial.early_stopping else None,
                peak_rss_mb=peak.rss_mb,
                peak_cuda_mb=peak.cuda_mb,
                base_identity=self.base_identity,
            )
        finally:
            self.base = remove_adapter(model)

    def lr_range_test(self, spec: LrRangeSpec, workdir: Path) -> list[tuple[float, float]]:
        """The learning-rate range test (objectives/_lr_range.py) on a fresh adapter with the
        trial's settings: (lr, smoothed training loss) per step. Leaves the base as it found it."""
        from ._lr_range import run_range_test

        set_seed(spec.trial.seed)
        model = add_adapter(self.base, self.model_spec, spec.trial.lora_args)
        try:

            def make_trainer(
                cls: type[_T], overrides: dict[str, Any], callbacks: list[TrainerCallback]
            ) -> _T:
                settings = {**training_settings(spec.trial.training_args), **overrides}
                settings.update(self._own_settings(spec.trial, workdir))
                trainer = cls(
                    model=model,
                    args=TrainingArguments(**settings),
                    train_dataset=self.data.train,
                    data_collator=self._collator,
                    processing_class=self.tokenizer,
                    callbacks=callbacks,
                )
                trainer.remove_callback(PrinterCallback)
                return trainer

            return run_range_test(make_trainer, spec, workdir)
        finally:
            self.base = remove_adapter(model)
            gc.collect()

    def evaluate_base(self) -> dict[str, float]:
        """The base model's metrics, no adapter: what every trial has to beat."""
        metrics = self._loss_metrics(self.base)
        if self.data.eval_prompts:
            metrics.update(self._generation_metrics(self.base)[0])
        return metrics

    # -- the steps -------------------------------------------------------------------------------
    def _trainer(
        self,
        model: torch.nn.Module,
        trial: TrialSpec,
        workdir: Path,
        on_curve: CurveHook | None,
        deadline: float | None,
    ) -> _ExactEvalTrainer:
        settings = training_settings(trial.training_args)
        if trial.early_stopping:
            # Early stopping keeps the best evaluation's adapter, not the last: the Trainer saves a
            # checkpoint at each evaluation (the adapter only) and reloads the best one at the end.
            settings.setdefault("metric_for_best_model", "eval_loss")
            settings.update(
                save_strategy=settings["eval_strategy"],
                save_steps=settings.get("eval_steps") or settings.get("logging_steps", 500),
                save_total_limit=1,
                save_only_model=True,
                load_best_model_at_end=True,
            )
        settings.update(self._own_settings(trial, workdir))
        args = TrainingArguments(**settings)
        callbacks: list[TrainerCallback] = [_DivergenceGuard()]
        if deadline is not None:
            callbacks.append(_Deadline(deadline))
        if on_curve:
            callbacks.append(_CurveCallback(on_curve))
        if trial.early_stopping:
            callbacks.append(EarlyStoppingCallback(**trial.early_stopping))
        trainer = _ExactEvalTrainer(
            model=model,
            args=args,
            train_dataset=self.data.train,
            eval_dataset=self.data.eval,
            data_collator=self._collator,
            processing_class=self.tokenizer,
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # the sweep prints one line per trial, not per log
        return trainer

    def _own_settings(self, trial: TrialSpec, workdir: Path) -> dict:
        """lorasweep's own TrainingArguments: where things go, what reports, which device and seed."""
        return dict(
            output_dir=str(workdir / "trainer"),
            report_to="none",
            disable_tqdm=True,
            seed=trial.seed,
            use_cpu=self.placement.device == "cpu",
            bf16=self.placement.precision == "bf16",
            fp16=self.placement.precision == "fp16",
            include_num_input_tokens_seen="non_padding",
            logging_nan_inf_filter=False,  # a NaN loss must show in the log, so the guard sees it
        )

    def _final_loss(self, trainer: _ExactEvalTrainer, trial: TrialSpec) -> dict[str, float] | None:
        """The Trainer's last evaluation as the trial's eval loss, when it is the number the exact
        pass below would compute: taken at the final step (the weights the trial keeps; with early
        stopping the best checkpoint is reloaded, so not then) and in fp32 (in bf16/fp16 the
        Trainer evaluates under autocast, the exact pass does not). Saves one pass over the eval
        split per trial. None: the exact pass runs."""
        if trial.early_stopping or self.placement.precision != "fp32":
            return None
        if trainer.last_eval is None or trainer.last_eval[0] != trainer.state.global_step:
            return None
        loss = trainer.last_eval[1]
        return {"eval_loss": loss, "eval_perplexity": perplexity(loss)}

    @torch.no_grad()
    def _loss_metrics(self, model: PeftModel | PreTrainedModel) -> dict[str, float]:
        """eval_loss is the mean NLL per response token over the whole eval split (not the Trainer's
        mean of per-batch means), and eval_perplexity its exp."""
        model.eval()
        device = next(model.parameters()).device
        total, count = 0.0, 0
        batch_size = self.eval_spec.batch_size
        for start in range(0, len(self._eval_rows), batch_size):
            batch = self._collator(self._eval_rows[start : start + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            nll, tokens = summed_nll(logits, batch["labels"])
            total, count = total + nll, count + tokens
        loss = total / max(count, 1)
        return {"eval_loss": loss, "eval_perplexity": perplexity(loss)}

    @torch.no_grad()
    def _generation_metrics(
        self, model: PeftModel | PreTrainedModel
    ) -> tuple[dict[str, float], list[dict[str, str]]]:
        """Greedy generation on the first eval.max_samples eval prompts, batched and left-padded."""
        model.eval()
        device = next(model.parameters()).device
        n = min(self.eval_spec.max_samples, len(self.data.eval_prompts))
        prompts = self.data.eval_prompts[:n]
        outputs: list[str] = []
        batch_size = self._generation_batch(n)
        for start in range(0, n, batch_size):
            chunk = prompts[start : start + batch_size]
            enc = self.tokenizer(
                chunk,
                return_tensors="pt",
                padding=True,
                padding_side="left",
                truncation=True,
                max_length=self.data_spec.max_length,
            ).to(device)
            # generate: the loaded causal-LM class's (GenerationMixin), reached through peft's wrapper;
            # the declared types stop at PreTrainedModel, which does not have it
            generated = model.generate(  # type: ignore[operator]
                **enc,
                max_new_tokens=self.eval_spec.max_new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
            new_tokens = generated[:, enc["input_ids"].shape[1] :]
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            stop = self.data.eval_stop  # a text_template's end marker ends the response
            outputs += [(t.split(stop)[0] if stop else t).strip() for t in texts]
        references = self.data.eval_references[:n]
        labels = self.data.eval_labels[:n] if self.data.eval_labels is not None else None
        metrics = generation_metrics(outputs, references, labels, self.eval_spec.f1)
        for name, score in self.custom_metrics.items():
            metrics[name] = _custom_score(name, score, outputs, list(references))
        samples = [
            {"prompt": p, "reference": r, "output": o}
            for p, r, o in zip(prompts, references, outputs, strict=True)
        ][: self.eval_spec.log_samples]
        return metrics, samples

    def _generation_batch(self, n: int) -> int:
        """The largest generation batch that fits, up to all n prompts at once (bounded by
        MAX_GENERATION_BATCH), and never below eval.batch_size. Greedy decoding runs
        max_new_tokens forward passes per batch whatever its size, so on a small base one batch
        of 64 prompts takes about half the time of two of 32. What a sequence holds while it
        generates, from the base's shape: its key/value cache and its hidden states at full
        length, and one row of logits; the batch may take a quarter of the memory free now."""
        f, spec = self.footprint, self.eval_spec
        length = self.data_spec.max_length + spec.max_new_tokens
        itemsize = f.bytes / max(f.parameters, 1)
        per_row = (2 * f.layers + 8) * f.hidden_size * length * itemsize + 2 * f.vocab_size * 4
        fits = int(_free_memory(f.device) / 4 / max(per_row, 1))
        return max(spec.batch_size, min(n, MAX_GENERATION_BATCH, fits))


MAX_GENERATION_BATCH = 256  # past this, a batch gains nothing on a GPU and pads more on a CPU


def _free_memory(device: str) -> int:
    """Bytes free for generation: the GPU's free memory, else what the system has available."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    import psutil

    return psutil.virtual_memory().available


_CURVES = ("loss", "grad_norm", "learning_rate", CURVE_METRICS[0])


def _custom_score(name: str, score: MetricFn, outputs: list[str], references: list[str]) -> float:
    """A user's metric: its own exception fails the trial as any error in it would; a value that is
    not a number is named here, not deep inside Optuna."""
    value = score(outputs, references)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"custom metric {name!r} must return a number, but got {type(value).__name__} {value!r}."
        ) from None


class _ExactEvalTrainer(Trainer):
    """A Trainer whose eval_loss is the mean NLL per response token over the whole eval split, as
    _loss_metrics computes it, not the Trainer's own average: that one repeats each batch's mean
    loss eval_batch_size times (the last, shorter batch too) and averages those, so batches with
    fewer response tokens weigh as much as full ones. The learning curve, the pruner and the
    trial's final eval_loss then read one quantity, and the final one need not be computed twice
    (Recipe._final_loss)."""

    last_eval: tuple[int, float] | None = None  # (global step, exact eval loss) of the last evaluation
    _sums: list[float] | None = None  # [summed NLL, tokens] while an evaluation runs

    def evaluation_loop(self, *args, **kwargs):
        self._sums = [0.0, 0]
        try:
            output = super().evaluation_loop(*args, **kwargs)
            nll, tokens = self._sums
        finally:
            self._sums = None
        prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
        if tokens and output.metrics is not None and f"{prefix}_loss" in output.metrics:
            output.metrics[f"{prefix}_loss"] = nll / tokens
            self.last_eval = (self.state.global_step, nll / tokens)
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._sums is None or "labels" not in inputs:  # training: the Trainer's own loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        nll, tokens = summed_nll(outputs.logits, inputs["labels"])
        self._sums[0] += nll
        self._sums[1] += tokens
        loss = torch.tensor(nll / max(tokens, 1), device=outputs.logits.device)
        return (loss, outputs) if return_outputs else loss


class TrialDiverged(FloatingPointError):
    """The loss (or the gradient norm) became NaN or infinite: the trial cannot recover."""


class _DivergenceGuard(TrainerCallback):
    """Stops a trial at the first log whose loss or gradient norm is not finite, rather than
    training on to max_steps and only then finding a NaN. The Trainer's own nan/inf filter is off
    (see _trainer), so a NaN inside the logging window shows in the logged mean."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "grad_norm", "eval_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                raise TrialDiverged(
                    f"{key} became {value} at step {state.global_step}: the trial diverged. "
                    "A lower learning_rate (or max_grad_norm) usually helps."
                )


def _check_deadline(deadline: float | None, step: int) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise TrialTimedOut(f"the study's timeout passed at step {step}: the trial was stopped there")


class _Deadline(TrainerCallback):
    """Stops training at the first step that ends past the deadline (runner.py: TrialTimedOut)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def on_step_end(self, args, state, control, **kwargs):
        _check_deadline(self.deadline, state.global_step)


def _footprint(base: PreTrainedModel, device: str) -> BaseFootprint:
    """The loaded base's weight and shape (its config's names; GPT-2's n_embd, n_layer too, through
    the config's attribute map)."""
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    tensors = [*base.parameters(), *base.buffers()]
    return BaseFootprint(
        parameters=sum(p.numel() for p in base.parameters()),
        bytes=sum(t.numel() * t.element_size() for t in tensors),
        hidden_size=int(getattr(config, "hidden_size", 0) or 0),
        layers=int(getattr(config, "num_hidden_layers", 0) or 0),
        vocab_size=int(getattr(config, "vocab_size", 0) or 0),
        device=device,
    )


class _CurveCallback(TrainerCallback):
    """Forwards the Trainer's learning curves (train and eval loss) to the trial's curve hook."""

    def __init__(self, on_curve: CurveHook) -> None:
        self.on_curve = on_curve

    def on_log(self, args, state, control, logs=None, **kwargs):
        metrics = {k: float(v) for k, v in (logs or {}).items() if k in _CURVES}
        if "eval_loss" in metrics:
            metrics["eval_perplexity"] = perplexity(metrics["eval_loss"])
        if metrics:
            self.on_curve(state.global_step, metrics)
