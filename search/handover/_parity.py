"""The parity gate: an ONNX export is trusted only once ONNX Runtime gives what PyTorch gives.

On the sweep's own eval data, each export is run beside the PyTorch model it came from (the base
with the adapter, unmerged: the model the trial scored):
- greedy generation on the eval prompts: fp32 tokens must equal PyTorch's. A divergence where
  PyTorch's two candidates are closer than twice the logit tolerance is a near-tie that either
  runtime may break either way; it is counted as a tie, not a mismatch;
- the logits of every eval row: fp32's largest absolute difference must stay within the tolerance;
- the eval perplexity (per response token, as the sweep computes it) recomputed with ONNX Runtime:
  within max_perplexity_change of PyTorch's, relative, for each precision (1% for fp32);
- the PyTorch model itself: its eval loss (the log of its eval perplexity) within
  max_eval_loss_change of the loss its trial recorded, relative. A model rebuilt from files that
  changed since the trial is not the trial's, however well ONNX matches it.
Size, load time and generation speed are measured on the way and reported, not gated. Speed is
ms per new token, greedy at batch 1, on the first SPEED_PROMPTS prompts: every runtime runs them in
turn, SPEED_RUNS times, and each figure (ms/token, and the ratio to PyTorch's of the same round) is
the median over the rounds, so that a machine busy with something else for a moment moves it
little (single timed runs once read 21x here and, on a loaded machine, 224x). Each figure keeps its
rounds, so the tables show its spread (fastest-slowest) and the 1-minute load average, and call it
unreliable when its slowest round took over WIDE_SPREAD times its fastest, or when the load average
exceeded the cores (other work was competing for them). A speed ratio is the ratio of the two
ms/token figures as the tables print them (MS_DECIMALS), so that it can be checked against them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import torch

from lorasweep.objectives import perplexity, summed_nll

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

from ..precisions import REGISTRY
from ._export import Exported

SPEED_RUNS = 5
REPRODUCED = "PyTorch eval loss"  # the check that the rebuilt model gives its trial's eval loss
SPEED_PROMPTS = 8
MS_DECIMALS = 2  # ms/token as the tables print it; the ratios are computed from these figures
WIDE_SPREAD = 1.5  # slowest round / fastest round above this: the figure is unreliable


@dataclass(frozen=True)
class Limits:
    max_logit_diff: float
    max_perplexity_change: dict[str, float]  # precision -> relative change allowed
    max_eval_loss_change: float = 0.01  # the PyTorch model's eval loss from its trial's, relative


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    measured: str
    limit: str

    def __str__(self) -> str:  # the project's error grammar, for a failed check
        return f"{self.name} must be {self.limit}, but got {self.measured}"


@dataclass
class Measured:
    """One model's figures, and the gate's checks on them."""

    name: str  # pytorch, fp32, int8, int4
    how: str
    size_bytes: int
    load_seconds: float
    ms_per_token: float = 0.0  # median over the speed runs
    speedup: float = (
        1.0  # the reference's ms/token over this model's (PyTorch's, or a bundle's merged export)
    )
    ms_runs: list[float] = field(default_factory=list)  # ms/token of each speed run
    load_average: float | None = None  # the 1-minute load average while they ran (the higher end)
    cores: int | None = None  # the cores this process could use
    perplexity: float = 0.0
    perplexity_change: float = 0.0  # relative to PyTorch's
    max_logit_diff: float = 0.0
    identical: int = 0  # prompts whose greedy tokens equal PyTorch's
    ties: int = 0
    mismatches: list[dict] = field(default_factory=list)  # the first few, with both continuations
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def unreliable(self) -> str | None:
        """Why the ms/token figure is noise rather than a measure, or None: its rounds spread wider than
        WIDE_SPREAD (slowest / fastest), or the load average exceeded the cores."""
        reasons = []
        spread = max(self.ms_runs) / max(min(self.ms_runs), 1e-9) if self.ms_runs else 1.0
        if spread > WIDE_SPREAD:
            reasons.append(f"spread {spread:.1f}x > {WIDE_SPREAD:g}x")
        if self.load_average is not None and self.cores and self.load_average > self.cores:
            reasons.append(f"load {self.load_average:.1f} > {self.cores} cores")
        return "; ".join(reasons) or None

    @classmethod
    def from_dict(cls, data: dict) -> Measured:
        """What asdict wrote (and the `passed` a report adds)."""
        checks = [Check(**c) for c in data["checks"]]
        return cls(**{k: v for k, v in data.items() if k not in ("passed", "checks")}, checks=checks)


@dataclass
class Parity:
    """The gate's findings on every export: what parity.json holds."""

    prompts: int
    rows: int
    models: list[Measured]
    speed_runs: int = SPEED_RUNS
    speed_prompts: int = SPEED_PROMPTS
    trial_eval_loss: float | None = None  # what the trial recorded; None: nothing to compare with
    max_eval_loss_change: float | None = None  # None: not checked (eval_loss_note says why)
    eval_loss_note: str | None = None  # why the trial's eval loss was not compared, when it was not

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.models)

    @property
    def failures(self) -> list[str]:
        return [f"{m.name}: {c}" for m in self.models for c in m.checks if not c.passed]

    def save(self, path: Path) -> None:
        data: dict[str, Any] = {"passed": self.passed, "prompts": self.prompts, "eval_rows": self.rows}
        data |= {"speed_runs": self.speed_runs, "speed_prompts": self.speed_prompts}
        data |= {"trial_eval_loss": self.trial_eval_loss, "max_eval_loss_change": self.max_eval_loss_change}
        data["eval_loss_note"] = self.eval_loss_note
        data["models"] = [{**asdict(m), "passed": m.passed} for m in self.models]
        path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Parity:
        """What `save` wrote (a promote that completes a killed one reads the gate's findings back)."""
        data = json.loads(path.read_text())
        models = [Measured.from_dict(m) for m in data["models"]]
        keys = ("speed_runs", "speed_prompts", "trial_eval_loss", "max_eval_loss_change", "eval_loss_note")
        speed = {k: data[k] for k in keys if k in data}  # a report from before a key has none
        return cls(data["prompts"], data["eval_rows"], models, **speed)


class TorchLM:
    """The reference: the PeftModel on the CPU in fp32 (with one adapter, or several: `using`)."""

    def __init__(self, model: PeftModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        self._adapter: str | None = ""  # "": as the model is; None: the base alone; else that adapter

    def using(self, adapter: str | None) -> TorchLM:
        """This model with one of its named adapters active, or with none (None)."""
        view = copy.copy(self)
        view._adapter = adapter
        return view

    def _active(self) -> contextlib.AbstractContextManager:
        if self._adapter is None:
            return self.model.disable_adapter()
        if self._adapter:
            self.model.set_adapter(self._adapter)
        return contextlib.nullcontext()

    @torch.no_grad()
    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with self._active():
            out = self.model(
                input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)
            )
        return out.logits.float().numpy()

    @torch.no_grad()
    def greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        prompt = torch.tensor([ids])
        with self._active():
            generated = self.model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
            )
        return _until_eos(generated[0, len(ids) :].tolist(), self.eos_id)


class OnnxLM:
    """An export run as a user runs it. A genai folder runs in onnxruntime-genai: generation through
    its Generator, and logits too, row by row (its own KV cache: a plain session fed an empty cache
    fails on sliding-window attention, Gemma 2's, in GroupQueryAttention). A logits model runs in an
    ONNX Runtime session, generating by a greedy loop that reruns the whole sequence (no cache). A
    bundle's adapter is made active by `using`."""

    def __init__(self, export: Exported, eos_id: int) -> None:
        self.export, self.eos_id = export, eos_id
        self._adapters: Any = None  # onnxruntime-genai's Adapters of the model, once one is loaded
        # A bundle's view (`using`): onnxruntime-genai's load of its .onnx_adapter file; 0 otherwise.
        self.adapter_load_seconds = 0.0
        self._active: str | None = None
        self.switch_seconds: list[float] = []  # each Generator's set_active_adapter
        started = time.monotonic()
        if export.kind == "logits":
            options = ort.SessionOptions()
            options.log_severity_level = 3  # "some nodes were not assigned to the preferred provider"
            self.session = ort.InferenceSession(str(export.folder / "model.onnx"), options)
        else:
            import onnxruntime_genai as og

            self._og = og
            self.generator_model = og.Model(str(export.folder))
            config = json.loads((export.folder / "genai_config.json").read_text())["model"]
            self.context = config["context_length"]  # generation may not run past it
            # A generator's KV cache holds max_length tokens, and sliding-window attention wants at
            # least a window's worth (GroupQueryAttention: "KV cache capacity must be at least
            # local_window_size").
            self.min_length = (config["decoder"].get("sliding_window") or {}).get("window_size", 0)
        self.load_seconds = time.monotonic() - started  # what a user loads to generate

    @property
    def adapter(self) -> str:
        return self._active or "no adapter"

    def using(self, name: str, adapter: Path) -> OnnxLM:
        """A view of this model (a bundle's base) with the .onnx_adapter `adapter` active, sharing its
        model; the view's adapter_load_seconds is onnxruntime-genai's load of the file."""
        view = copy.copy(self)
        if self._adapters is None:
            self._adapters = self._og.Adapters(self.generator_model)
        started = time.perf_counter()
        self._adapters.load(str(adapter), name)
        view.adapter_load_seconds = time.perf_counter() - started
        view._adapters, view._active, view.switch_seconds = self._adapters, name, []
        return view

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits of right-padded rows; a padded position's are zero."""
        if self.export.kind == "logits":
            feeds = {
                "input_ids": input_ids.astype(np.int64),
                "attention_mask": attention_mask.astype(np.int64),
            }
            return self.session.run(["logits"], feeds)[0]
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            n = int(mask.sum())
            generator = self._generator(n + 1)
            generator.append_tokens(ids[:n].astype(np.int32))
            rows.append(generator.get_output("logits")[0, :n])
        out = np.zeros((*input_ids.shape, rows[0].shape[-1]), np.float32)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    def greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        if self.export.kind == "logits":
            out: list[int] = []
            while len(out) < max_new_tokens and (not out or out[-1] != self.eos_id):
                sequence = np.array([ids + out])
                out.append(int(self.logits(sequence, np.ones_like(sequence))[0, -1].argmax()))
            return out
        generator = self._generator(len(ids) + max_new_tokens)
        generator.append_tokens(ids)
        out = []
        while not generator.is_done() and len(out) < max_new_tokens:  # max_length may hold a window more
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        return _until_eos(out, self.eos_id)

    def _generator(self, max_length: int):
        og = self._og
        params = og.GeneratorParams(self.generator_model)
        params.set_search_options(
            max_length=min(max(max_length, self.min_length), self.context), do_sample=False
        )
        generator = og.Generator(self.generator_model, params)
        if self._active is not None:
            started = time.perf_counter()
            generator.set_active_adapter(self._adapters, self._active)
            self.switch_seconds.append(time.perf_counter() - started)
        return generator


def _until_eos(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens


def measure(
    reference: TorchLM,
    reference_measured: Measured,
    exports: list[Exported],
    prompts: list[list[int]],
    rows: list[dict],
    max_new_tokens: int,
    batch_size: int,
    limits: Limits,
    trial_eval_loss: float | None = None,
    unchecked: str | None = None,
) -> Parity:
    """Run every export beside the reference and apply the gate; the reference itself must give
    `trial_eval_loss`, the trial's own, within the limits, unless `unchecked` says why it cannot."""
    onnx = {e.precision: OnnxLM(e, reference.eos_id) for e in exports}
    measured = [reference_measured] + [
        Measured(p, lm.export.how, lm.export.size_bytes, lm.load_seconds) for p, lm in onnx.items()
    ]
    by_name = {m.name: m for m in measured}
    reference_measured.perplexity = score(
        reference,
        {name: (lm, by_name[name]) for name, lm in onnx.items()},
        prompts,
        rows,
        max_new_tokens,
        batch_size,
        2 * limits.max_logit_diff,
    )
    speed({"pytorch": reference, **onnx}, by_name, prompts[:SPEED_PROMPTS], max_new_tokens)
    for name in onnx:
        gate(by_name[name], len(prompts), limits, name)
    compared = trial_eval_loss if unchecked is None else None  # the trial's loss, when it is checked
    if compared is not None:
        reference_measured.checks.append(reproduces(reference_measured.perplexity, compared, limits))
    return Parity(
        len(prompts),
        len(rows),
        measured,
        SPEED_RUNS,
        min(len(prompts), SPEED_PROMPTS),
        trial_eval_loss,
        limits.max_eval_loss_change if compared is not None else None,
        unchecked if trial_eval_loss is not None else None,
    )


def reproduces(reference_perplexity: float, trial_eval_loss: float, limits: Limits) -> Check:
    """The rebuilt PyTorch model's eval loss against the one its trial recorded (the perplexity is
    exp of the same mean NLL, capped far above any trained model's)."""
    loss = math.log(reference_perplexity)
    change = loss / trial_eval_loss - 1.0 if trial_eval_loss else (0.0 if loss == 0 else math.inf)
    allowed = limits.max_eval_loss_change
    return Check(
        REPRODUCED,
        abs(change) <= allowed,
        f"{loss:.5g} ({change:+.2%})",
        f"within {allowed:.1%} of its trial's {trial_eval_loss:.5g}",
    )


def score(
    reference: TorchLM,
    runs: dict[str, tuple[OnnxLM, Measured]],
    prompts: list[list[int]],
    rows: list[dict],
    max_new_tokens: int,
    batch_size: int,
    tie: float,
) -> float:
    """Each run's perplexity (and its change from the reference's), largest logit difference and
    greedy agreement, on the eval rows and prompts; returns the reference's perplexity. A greedy
    divergence where the reference's two candidates are within `tie` is counted as a tie."""
    # Perplexity and logits over the eval rows, right-padded (Model Builder's attention wants that).
    nll = {name: 0.0 for name in ["pytorch", *runs]}
    count = 0
    for start in range(0, len(rows), batch_size):
        ids, mask, labels = pad_rows(rows[start : start + batch_size], reference.pad_id)
        expected = reference.logits(ids, mask)
        summed, tokens = _nll(expected, labels)
        nll["pytorch"] += summed
        for name, (lm, m) in runs.items():
            logits = lm.logits(ids, mask)
            nll[name] += _nll(logits, labels)[0]
            attended = mask.astype(bool)
            m.max_logit_diff = max(m.max_logit_diff, float(np.abs(logits - expected)[attended].max()))
        count += tokens
    reference_perplexity = perplexity(nll["pytorch"] / max(count, 1))
    for name, (_, m) in runs.items():
        m.perplexity = perplexity(nll[name] / max(count, 1))
        m.perplexity_change = m.perplexity / reference_perplexity - 1.0

    # Greedy generation, batch 1, on every eval prompt.
    expected_tokens = [reference.greedy(p, max_new_tokens) for p in prompts]
    for lm, m in runs.values():
        got_tokens = [lm.greedy(p, max_new_tokens) for p in prompts]
        for prompt, want, got in zip(prompts, expected_tokens, got_tokens, strict=True):
            verdict = _compare(reference, prompt, want, got, tie)
            if verdict == "identical":
                m.identical += 1
            elif verdict == "tie":
                m.ties += 1
            elif len(m.mismatches) < 5:
                text = reference.tokenizer.decode
                m.mismatches.append({"prompt": text(prompt), "pytorch": text(want), "onnx": text(got)})
    return reference_perplexity


def gate(m: Measured, n_prompts: int, limits: Limits, precision: str) -> None:
    """The checks of an export of this precision: perplexity always; greedy tokens and logits for an
    exact one (fp32: search/precisions.py says which)."""
    allowed = limits.max_perplexity_change[precision]
    m.checks.append(
        Check(
            "eval perplexity",
            abs(m.perplexity_change) <= allowed,
            f"{m.perplexity_change:+.2%} from PyTorch's",
            f"within {allowed:.1%}",
        )
    )
    if not REGISTRY[precision].exact:  # quantized weights change tokens and logits by design: measured only
        return
    wrong = n_prompts - m.identical - m.ties
    m.checks.append(
        Check(
            "greedy generation", wrong == 0, f"differs on {wrong} of {n_prompts} prompts", "equal PyTorch's"
        )
    )
    m.checks.append(
        Check(
            "largest logit difference",
            m.max_logit_diff <= limits.max_logit_diff,
            f"{m.max_logit_diff:.3g}",
            f"at most {limits.max_logit_diff:g}",
        )
    )


def speed(
    lms: dict,
    by_name: dict[str, Measured],
    prompts: list[list[int]],
    max_new_tokens: int,
    reference: str = "pytorch",
) -> None:
    """ms/token of each runtime and its ratio to the reference's: medians over SPEED_RUNS rounds in
    which every runtime generates from the same prompts, one after another, so that a ratio compares
    runs made under the same load. The runtimes are warm: they have just generated from every prompt."""
    rounds: dict[str, list[float]] = {name: [] for name in lms}
    load = os.getloadavg()[0]
    for _ in range(SPEED_RUNS if prompts else 0):
        for name, lm in lms.items():
            started = time.perf_counter()
            new_tokens = sum(len(lm.greedy(p, max_new_tokens)) for p in prompts)
            rounds[name].append(1000 * (time.perf_counter() - started) / max(new_tokens, 1))
    if prompts:
        settle(rounds, by_name, reference, max(load, os.getloadavg()[0]), len(os.sched_getaffinity(0)))


def settle(
    rounds: dict[str, list[float]], by_name: dict[str, Measured], reference: str, load: float, cores: int
) -> None:
    """Each model's speed figures from its timed rounds (ms/token): the median, the rounds for their
    spread, the load they ran under, and the ratio to the reference as the tables print both."""
    for name, ms in rounds.items():
        m = by_name[name]
        m.ms_runs, m.ms_per_token, m.load_average, m.cores = list(ms), statistics.median(ms), load, cores
    for name in rounds:
        by_name[name].speedup = printed_ratio(by_name[reference].ms_per_token, by_name[name].ms_per_token)


def printed_ratio(reference_ms: float, ms: float) -> float:
    """reference_ms / ms, each rounded to MS_DECIMALS as the tables print them."""
    return round(reference_ms, MS_DECIMALS) / max(round(ms, MS_DECIMALS), 10.0**-MS_DECIMALS)


def _compare(reference: TorchLM, prompt: list[int], want: list[int], got: list[int], tie: float) -> str:
    if want == got:
        return "identical"
    k = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
    if k >= len(want) or k >= len(got):
        return "mismatch"  # one stopped (eos or length) where the other went on
    prefix = np.array([prompt + want[:k]])
    last = reference.logits(prefix, np.ones_like(prefix))[0, -1]
    return "tie" if last[want[k]] - last[got[k]] <= tie else "mismatch"


def pad_rows(rows: list[dict], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = max(len(r["input_ids"]) for r in rows)
    ids = np.full((len(rows), width), pad_id, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    labels = np.full((len(rows), width), -100, np.int64)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n], mask[i, :n], labels[i, :n] = row["input_ids"], 1, row["labels"]
    return ids, mask, labels


def _nll(logits: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """(summed NLL, tokens) of the labelled next tokens: the trial side's own eval_loss function."""
    return summed_nll(torch.from_numpy(logits), torch.from_numpy(labels))
