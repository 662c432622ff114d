"""One trial on the tiny in-process model: what it trains, what it leaves behind."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from lorasweep.objectives import DataSpec, EvalSpec, InputError, ModelSpec, Recipe, TrialSpec, eval_inputs
from lorasweep.objectives.data import load_rows, tokenize
from lorasweep.objectives.model import place

DATA = DataSpec(train_split="train[:240]", eval_fraction=0.25)
TRAINING = {
    "max_steps": 4,
    "per_device_train_batch_size": 8,
    "learning_rate": 3e-3,
    "logging_steps": 2,
    "eval_steps": 2,
}


@pytest.fixture(scope="module")
def worker() -> Recipe:
    return Recipe(ModelSpec(), DATA, EvalSpec(max_samples=8, max_new_tokens=8))


def test_loss_is_on_response_tokens_only(worker):
    row = worker.data.train[0]
    masked = sum(1 for label in row["labels"] if label == -100)
    assert row["labels"][:masked] == [-100] * masked  # the prompt, and only a prefix, is masked
    assert row["labels"][masked:] == row["input_ids"][masked:]
    prompt = worker.tokenizer.decode(row["input_ids"][:masked])
    response = worker.tokenizer.decode(row["input_ids"][masked:-1])
    assert prompt.startswith("Phrase: ") and prompt.endswith("\nTone:")
    assert re.fullmatch(r" (positive|negative|neutral|mixed|sarcastic), about the \w+", response)
    assert row["input_ids"][-1] == worker.tokenizer.eos_token_id  # the model learns to stop


def test_eval_split_is_carved_out_stratified_and_disjoint():
    train, eval_ = load_rows(DATA)
    assert len(train) == 180 and len(eval_) == 60
    tones_train = sorted(set(train["tone"]))
    assert sorted(set(eval_["tone"])) == tones_train  # every class is on both sides


def test_trial_trains_only_lora_weights_and_saves_the_adapter(worker, tmp_path):
    before = {k: v.clone() for k, v in worker.base.state_dict().items()}
    curve: list[tuple[int, dict]] = []
    result = worker.run_trial(
        TrialSpec(training_args=TRAINING, lora_args={"r": 4, "lora_alpha": 8}, seed=1),
        tmp_path,
        on_curve=lambda step, m: curve.append((step, m)),
    )

    after = worker.base.state_dict()
    assert after.keys() == before.keys()  # the adapter came off again
    assert all(torch.equal(before[k], after[k]) for k in before)  # and the base never moved

    # The adapter names its base as the sweep file does, not by a path into this machine's cache,
    # and its card says what it is.
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny"
    card = (result.adapter_dir / "README.md").read_text()
    assert "base_model: tiny" in card and "| r | 4 |" in card and "| seed | 1 |" in card
    assert f"| eval_loss | {result.metrics['eval_loss']:.6g} |" in card

    adapter = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at 0

    assert [step for step, m in curve if "eval_loss" in m] == [2, 4]
    assert set(result.metrics) == {
        "eval_loss",
        "eval_perplexity",
        "rouge1",
        "rouge2",
        "rougeL",
        "f1",
        "exact_match",
        "bleu",
        "accuracy",
    }
    assert result.metrics["eval_perplexity"] == pytest.approx(
        torch.tensor(result.metrics["eval_loss"]).exp().item()
    )
    assert 0 < result.trainable_params < result.total_params and result.steps == 4
    assert len(result.samples) == 8 and {"prompt", "reference", "output"} == set(result.samples[0])


def test_a_trial_leaves_nothing_behind(worker, tmp_path):
    """The trial's Trainer, optimizer and adapter are collected when it ends, not trials later; nor
    are they frozen with what the worker keeps after its first trial."""
    import gc

    from peft import PeftModel
    from transformers import Trainer

    for seed in (0, 1):
        spec = TrialSpec(training_args=TRAINING, lora_args={"r": 2}, seed=seed, generate=False)
        worker.run_trial(spec, tmp_path / str(seed))
    gc.unfreeze()  # the frozen objects, too, in sight of get_objects
    try:
        kinds = (Trainer, PeftModel, torch.optim.Optimizer)
        alive = [o for o in gc.get_objects() if isinstance(o, kinds)]
    finally:
        gc.freeze()
    assert alive == []


def test_same_seed_gives_the_same_trial(worker, tmp_path):
    spec = TrialSpec(training_args=TRAINING, lora_args={"r": 4}, seed=3, generate=False)
    first = worker.run_trial(spec, tmp_path / "a").metrics
    second = worker.run_trial(spec, tmp_path / "b").metrics
    assert first == second


def test_a_nan_loss_fails_the_trial_within_one_logging_step(worker, tmp_path):
    logged: list[int] = []
    training = {**TRAINING, "max_steps": 200, "learning_rate": 1e4, "logging_steps": 2, "eval_steps": 200}
    with pytest.raises(FloatingPointError, match=r"became nan at step (\d+): the trial diverged") as e:
        worker.run_trial(
            TrialSpec(training_args=training, seed=0), tmp_path, on_curve=lambda step, m: logged.append(step)
        )
    step = int(re.search(r"at step (\d+)", str(e.value)).group(1))
    assert step < 200 and step % 2 == 0  # caught at the first log after it happened, not at the end
    assert max(logged, default=0) < step  # and nothing was reported after it
    assert all(torch.isfinite(v).all() for v in worker.base.state_dict().values())  # the base is intact


def test_early_stopping_keeps_the_best_evaluations_adapter(worker, tmp_path):
    """lr 3e-2 overshoots: eval loss rises after a few evaluations and patience 1 stops the trial.
    The adapter kept, and scored, is the best evaluation's, not the last one's."""
    curve: dict[int, float] = {}
    training = {**TRAINING, "max_steps": 60, "learning_rate": 3e-2, "logging_steps": 5, "eval_steps": 5}
    result = worker.run_trial(
        TrialSpec(
            training_args=training, early_stopping={"early_stopping_patience": 1}, seed=0, generate=False
        ),
        tmp_path,
        on_curve=lambda step, m: curve.update({step: m["eval_loss"]} if "eval_loss" in m else {}),
    )
    assert result.steps < 60 and result.steps == max(curve)  # stopped early
    assert result.best_step == min(curve, key=curve.get) < result.steps
    kept, last = curve[result.best_step], curve[result.steps]
    # The exact per-token loss of the kept adapter matches the best evaluation, not the last one.
    assert abs(result.metrics["eval_loss"] - kept) < abs(result.metrics["eval_loss"] - last)


def test_missing_template_field_names_the_columns():
    with pytest.raises(InputError, match=r"field \{text\}; the columns are phrase, tone, topic"):
        load_rows(DataSpec(prompt_template="{text}"))


def test_olive_text_template_trains_on_every_token(worker):
    spec = DataSpec(
        text_template="Phrase: {phrase} Tone: {tone}",
        prompt_template=None,
        response_template=None,
        label_column=None,
    )
    rows = load_rows(DataSpec(train_split="train[:20]"))[0]
    task = tokenize(spec, rows, rows, worker.tokenizer)
    assert task.train[0]["labels"] == task.train[0]["input_ids"]
    # generation from the text before the last field, scored against that field
    assert task.eval_prompts[0] == f"Phrase: {rows[0]['phrase']} Tone: "
    assert task.eval_references == [str(t) for t in rows["tone"]]
    one_field = tokenize(
        spec.model_copy(update={"text_template": "Phrase: {phrase}"}), rows, rows, worker.tokenizer
    )
    assert one_field.eval_prompts == []  # nothing to generate from: loss metrics only


def test_local_csv_with_a_split_expression(tmp_path):
    lines = ["question,answer"] + [f"q{i},a{i % 3}" for i in range(10)]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = DataSpec(
        path=str(tmp_path / "rows.csv"),
        train_split="train[:80%]",
        eval_split="train[80%:]",
        prompt_template="Q: {question}",
        response_template=" {answer}",
        label_column=None,
    )
    train, eval_ = load_rows(spec)
    assert train["question"] == [f"q{i}" for i in range(8)] and eval_["question"] == ["q8", "q9"]


def test_qlora_says_it_needs_cuda_on_a_cpu_machine():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match=r"qlora must run on CUDA.*method: lora"):
        place(ModelSpec(method="qlora"))


def test_searched_target_modules_name_modules_not_regexes(worker):
    from lorasweep.objectives.model import add_adapter, remove_adapter

    for targets, expected in (("q_proj", {"q_proj"}), ("q_proj, v_proj", {"q_proj", "v_proj"})):
        model = add_adapter(worker.base, ModelSpec(), {"r": 2, "target_modules": targets})
        try:
            wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "lora_A")}
            assert wrapped == expected
        finally:
            worker.base = remove_adapter(model)


def test_the_eval_split_is_capped_to_a_seeded_sample_of_max_eval_rows():
    whole = load_rows(DataSpec(eval_split="train[:500]"))[1]
    sample = load_rows(DataSpec(eval_split="train[:500]", max_eval_rows=50))[1]
    again = load_rows(DataSpec(eval_split="train[:500]", max_eval_rows=50))[1]
    other = load_rows(DataSpec(eval_split="train[:500]", max_eval_rows=50, seed=1))[1]
    assert len(whole) == 500 and len(sample) == 50
    assert sample.to_list() == again.to_list() != other.to_list()  # seeded: every trial scores the same rows
    assert all(row in whole.to_list() for row in sample.to_list())


def _long_prompts(path, long: set[int], max_length: int) -> DataSpec:
    """12 question/answer rows (8 train, 4 eval); the questions numbered in `long` are 2,000 words."""
    rows = [
        {"q": ("why " * (2000 if i in long else 2)).strip(), "a": "because" if i % 2 else "never"}
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return DataSpec(
        path=str(path),
        prompt_template="Q: {q}\nA:",
        response_template=" {a}",
        label_column=None,
        train_split="train[:8]",
        eval_split="train[8:12]",
        max_length=max_length,
    )


def test_rows_that_lose_their_response_to_max_length_are_counted_and_all_lost_refused(tmp_path, worker):
    spec = _long_prompts(tmp_path / "rows.jsonl", long={0, 3, 9}, max_length=32)
    task = tokenize(spec, *load_rows(spec), worker.tokenizer)
    assert task.lost_responses == {"train": 2, "eval": 1}
    assert task.lost_note(32).startswith(
        "note: 2 of 8 train rows and 1 of 4 eval rows lose their whole response"
    )
    spec = _long_prompts(tmp_path / "rows.jsonl", long=set(range(8)), max_length=32)
    with pytest.raises(InputError, match="max_length=32, which the prompts alone fill in all 8 train rows"):
        tokenize(spec, *load_rows(spec), worker.tokenizer)


def test_generation_prompts_keep_their_last_max_length_tokens(tmp_path):
    """A prompt of megabytes would otherwise be generated from whole, at every trial."""
    spec = _long_prompts(tmp_path / "rows.jsonl", long={9}, max_length=24)
    recipe = Recipe(ModelSpec(), spec, EvalSpec(max_samples=4, max_new_tokens=2))
    assert "f1" in recipe.evaluate_base()  # generated from all four prompts, the long one cut
    # cut to what its last max_length tokens can hold before it was tokenized at all (8,000 chars)
    assert len(recipe.data.eval_prompts[1]) == 24 * 32 and recipe.data.eval_prompts[1].endswith("why\nA:")
    prompts, _ = eval_inputs(spec, EvalSpec(max_samples=4), recipe.tokenizer)
    assert (
        max(len(p) for p in prompts) == 24
        and prompts[1][-3:] == recipe.tokenizer("why\nA:")["input_ids"][-3:]
    )


def test_a_trials_peak_memory_is_its_own_not_the_process_high_water_mark():
    from lorasweep.objectives.resources import MemoryWatch

    watch = MemoryWatch(cuda=False)
    watch.start()
    block = bytearray(400 * 2**20)  # 400 MiB, touched: resident
    block[::4096] = b"x" * len(block[::4096])
    big = watch.peak().rss_mb
    del block
    watch.start()  # the next trial: the 400 MiB are gone and must not count
    small = watch.peak().rss_mb
    assert big - small > 300, (big, small)


def test_a_trial_past_its_deadline_stops_at_the_next_step_and_leaves_the_base_as_it_was(worker, tmp_path):
    """The study's timeout reaches into a running trial: stopped between two steps, as an interrupt
    (not a failure of the trial), the base ready for the next trial."""
    import time

    from lorasweep.objectives import TrialTimedOut

    before = {k: v.clone() for k, v in worker.base.state_dict().items()}
    curve: list[int] = []
    spec = TrialSpec(training_args={**TRAINING, "max_steps": 10**9}, lora_args={"r": 4}, seed=1)
    started = time.monotonic()
    with pytest.raises(TrialTimedOut, match="the study's timeout passed at step 1:"):
        worker.run_trial(spec, tmp_path, on_curve=lambda step, m: curve.append(step), deadline=started)
    assert isinstance(TrialTimedOut(), KeyboardInterrupt) and curve == []
    assert time.monotonic() - started < 30
    assert worker.base.state_dict().keys() == before.keys()
    assert all(torch.equal(worker.base.state_dict()[k], v) for k, v in before.items())


def test_the_footprint_names_the_loaded_base(worker):
    footprint = worker.footprint
    assert footprint.parameters == sum(p.numel() for p in worker.base.parameters())
    assert footprint.bytes >= 4 * footprint.parameters  # fp32 on the CPU
    assert footprint.layers == worker.base.config.num_hidden_layers and footprint.hidden_size > 0
    assert footprint.vocab_size == worker.base.config.vocab_size and footprint.device == "cpu"


def test_the_final_eval_loss_is_the_exact_pass_taken_once(worker, tmp_path, monkeypatch):
    """The Trainer's evaluations report the exact per-token eval loss, so the one at the final
    step is the trial's eval_loss and the separate pass is not run again; without an evaluation
    at the final step, the exact pass runs."""
    passes = []
    exact = worker._loss_metrics
    monkeypatch.setattr(worker, "_loss_metrics", lambda model: passes.append(1) or exact(model))
    curve: dict[int, float] = {}
    result = worker.run_trial(
        TrialSpec(training_args=TRAINING, lora_args={"r": 4, "lora_alpha": 8}, seed=1, generate=False),
        tmp_path / "a",
        on_curve=lambda step, m: curve.update({step: m["eval_loss"]} if "eval_loss" in m else {}),
    )
    assert passes == [] and result.metrics["eval_loss"] == curve[4]

    # Same trial, not evaluated while it trains: the exact pass gives the final number, and it is
    # the number the Trainer's evaluation gave at the final step (the first trial's).
    args = {k: v for k, v in TRAINING.items() if k != "eval_steps"} | {"eval_strategy": "no"}
    again = worker.run_trial(
        TrialSpec(training_args=args, lora_args={"r": 4, "lora_alpha": 8}, seed=1, generate=False),
        tmp_path / "b",
    )
    assert passes == [1]
    assert again.metrics["eval_loss"] == pytest.approx(result.metrics["eval_loss"], rel=1e-5)


def test_generation_batch_is_the_largest_that_fits(worker, monkeypatch):
    from lorasweep.objectives import recipe

    assert worker._generation_batch(64) == 64  # the tiny base: all prompts in one batch
    assert worker._generation_batch(10_000) == recipe.MAX_GENERATION_BATCH
    monkeypatch.setattr(recipe, "_free_memory", lambda device: 0)  # no room: eval.batch_size, as before
    assert worker._generation_batch(64) == worker.eval_spec.batch_size
