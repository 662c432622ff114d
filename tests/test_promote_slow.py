"""Promotion's slower paths (`make test-slow`): Olive's int8 and int4 exports and their saved
workflows, a parity gate that fails, and an architecture Model Builder lacks (GPT-2), which takes
the torch.onnx dynamo path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import onnxruntime_genai as og
import optuna
import pytest
from mlflow import MlflowClient
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from lorasweep.objectives.tiny import ensure_tiny_base
from lorasweep.search.cli import main
from lorasweep.search.record import SWEEP as SWEEP_ATTR

pytestmark = pytest.mark.slow

SWEEP = """\
study: {name: quant, metric: eval_loss, sampler: {type: grid, seed: 0}, n_trials: 2}
data: {train_split: "train[:400]", eval_split: "train[1400:1460]"}
train: {max_steps: 20, eval_steps: 10, logging_steps: 10, per_device_train_batch_size: 16, r: 8}
eval: {max_samples: 8, max_new_tokens: 8}
promote: {model_name: tone-q}
search_space:
  learning_rate: {type: choice, values: [0.005, 0.01]}
"""


def _study(folder, name):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "mlruns" / "optuna.journal"))
    )
    return optuna.load_study(study_name=name, storage=storage)


def test_quantized_exports_then_a_failed_gate_leaves_the_alias(in_tmp, capsys):
    (in_tmp / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    assert main(["-q", "run", "sweep.yaml"]) == 0
    assert main(["promote", "--trial", "0"]) == 0
    out = capsys.readouterr().out
    assert "export: int8 by Olive OnnxDynamicQuantization" in out and "parity gate: passed" in out

    export = in_tmp / "exports" / "tone-q" / "v1"
    parity = {m["name"]: m for m in json.loads((export / "parity.json").read_text())["models"]}
    for precision, limit in (("int8", 0.05), ("int4", 0.15)):
        assert abs(parity[precision]["perplexity_change"]) <= limit  # measured, and held to the file's limit
        assert parity[precision]["size_bytes"] < parity["fp32"]["size_bytes"] / 2
        ops = {n.op_type for n in _graph(export / precision / "model.onnx").node}
        assert ("MatMulInteger" if precision == "int8" else "MatMulNBits") in ops
    # an int4 folder is still an onnxruntime-genai model: it generates
    model = og.Model(str(export / "int4"))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=24, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(og.Tokenizer(model).encode("Phrase: lovely seat\nTone:"))
    while not generator.is_done():
        generator.generate_next_token()
    assert len(generator.get_sequence(0)) > 8

    # The saved Olive workflow redoes the int8 model from the fp32 one, run from the export folder.
    from olive.workflows import run as olive_run

    again = in_tmp / "again"
    shutil.copytree(export, again, ignore=shutil.ignore_patterns("int8"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(again)
        olive_run(json.loads((again / "olive_int8.json").read_text()))
    assert (again / "int8" / "model.onnx").read_bytes() == (export / "int8" / "model.onnx").read_bytes()

    # Now the stored sweep asks for the impossible: trial 1 is registered, but not promoted.
    study = _study(in_tmp, "quant")
    text = study.user_attrs[SWEEP_ATTR]
    study.set_user_attr(
        SWEEP_ATTR,
        text.replace(
            "promote: {model_name: tone-q}", "promote: {model_name: tone-q, max_logit_diff: 1.0e-12}"
        ),
    )
    assert main(["promote", "--trial", "1"]) == 1
    captured = capsys.readouterr()
    assert "fp32: largest logit difference must be at most 1e-12, but got" in captured.out
    assert "not promoted: the parity gate failed (models:/tone-q@champion stays on version 1)" in captured.err
    client = MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    assert str(client.get_model_version_by_alias("tone-q", "champion").version) == "1"
    failed = client.get_model_version("tone-q", "2")
    assert failed.tags["lorasweep.gate"] == "failed" and "1e-12" in failed.tags["lorasweep.gate_failures"]
    assert failed.aliases == []


def _graph(path):
    import onnx

    return onnx.load(str(path), load_external_data=False).graph


GPT2_SWEEP = """\
study: {{name: gpt2, metric: eval_loss, sampler: {{type: random, seed: 0}}, n_trials: 1}}
model: {{base: {base}, target_modules: [c_attn]}}
data: {{train_split: "train[:200]", eval_split: "train[1400:1430]"}}
train: {{max_steps: 6, eval_steps: 3, logging_steps: 3, per_device_train_batch_size: 8}}
eval: {{max_samples: 4, max_new_tokens: 6}}
search_space:
  learning_rate: {{type: choice, values: [0.001]}}
"""


def test_an_architecture_model_builder_lacks_takes_the_dynamo_path(in_tmp, capsys):
    """GPT-2 (Conv1D c_attn): Model Builder refuses it; the export is a logits model instead."""
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_base())
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(in_tmp / "gpt2")
    tokenizer.save_pretrained(in_tmp / "gpt2")
    (in_tmp / "sweep.yaml").write_text(GPT2_SWEEP.format(base=in_tmp / "gpt2"), encoding="utf-8")
    assert main(["-q", "run", "sweep.yaml"]) == 0

    assert main(["export", "--out", "onnx", "--precision", "int8"]) == 0
    out = capsys.readouterr().out
    assert "Model Builder does not support GPT2LMHeadModel; using torch.onnx.export(dynamo=True)" in out
    fp32 = in_tmp / "onnx" / "fp32"
    assert not (fp32 / "genai_config.json").exists() and (fp32 / "tokenizer.json").is_file()
    session = ort.InferenceSession(str(fp32 / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    ids = np.array([tokenizer("Phrase: fine\nTone:")["input_ids"]] * 3)  # any batch, any length
    assert session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0].shape == (
        *ids.shape,
        len(tokenizer),
    )
    parity = json.loads((in_tmp / "onnx" / "parity.json").read_text())
    assert parity["passed"] and [m["name"] for m in parity["models"]] == ["pytorch", "fp32", "int8"]
    assert parity["models"][1]["how"] == "torch.onnx.export (dynamo)"
    # export writes no registry version
    assert MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db").search_registered_models() == []
    # and refuses to write into a folder that holds files
    assert main(["export", "--out", "onnx"]) == 2
    assert "--out must be a new or empty folder" in capsys.readouterr().err
    # an adapter bundle needs Model Builder's LoRA inputs: refused, naming the trial, nothing written
    assert main(["export", "--adapters", "--out", "bundle"]) == 2
    err = capsys.readouterr().err
    assert (
        "an adapter bundle must have a base that Model Builder exports, but GPT2LMHeadModel is not one" in err
    )
    assert "trial-0 cannot share one ONNX base" in err
    assert not (in_tmp / "bundle").exists() and not list(in_tmp.glob(".bundle-build-*"))


PHI_SWEEP = """\
study: {{name: phi, metric: eval_loss, sampler: {{type: random, seed: 0}}, n_trials: 1}}
model: {{base: {base}}}
data: {{train_split: "train[:200]", eval_split: "train[1400:1430]"}}
train: {{max_steps: 6, eval_steps: 3, logging_steps: 3, per_device_train_batch_size: 8}}
eval: {{max_samples: 4, max_new_tokens: 6}}
promote: {{precisions: [fp32]}}
search_space:
  learning_rate: {{type: choice, values: [0.001]}}
"""


def test_an_export_onnx_runtime_refuses_says_why_in_one_line_and_takes_the_dynamo_path(in_tmp, capsys):
    """A random-init Phi-2 with hidden 64 and 4 heads: Model Builder writes it, but its rotary size
    is one GroupQueryAttention rejects. promote says so in one line and promotes the dynamo export;
    a bundle, which has no other path, is refused in one line."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_base())
    config = AutoConfig.for_model(
        "phi",
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(in_tmp / "phi")
    tokenizer.save_pretrained(in_tmp / "phi")
    (in_tmp / "sweep.yaml").write_text(PHI_SWEEP.format(base=in_tmp / "phi"), encoding="utf-8")
    assert main(["-q", "run", "sweep.yaml"]) == 0

    assert main(["promote"]) == 0
    captured = capsys.readouterr()
    refused = [line for line in captured.out.splitlines() if "refuses" in line]
    assert refused == [
        "export: onnxruntime-genai refuses to run Model Builder's PhiForCausalLM: GroupQueryAttention: "
        "cos_cache dimension 1 must be <= head_size / 2 and a multiple of 8; using "
        "torch.onnx.export(dynamo=True) instead"
    ]
    assert "Traceback" not in captured.err and "GroupQueryAttention" not in captured.err
    assert "champion: models:/phi@champion -> version 1" in captured.out
    parity = json.loads((in_tmp / "exports" / "phi" / "v1" / "parity.json").read_text())
    assert parity["models"][1]["how"] == "torch.onnx.export (dynamo)"

    assert main(["export", "--adapters", "--out", "bundle"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: an adapter bundle must have a base that ONNX Runtime runs, but onnxruntime-genai refuses "
        "Model Builder's PhiForCausalLM: GroupQueryAttention: cos_cache dimension 1 must be <= head_size / 2 "
        "and a multiple of 8. Export the trials one by one (lorasweep export --trial N) instead: each then "
        "falls back to torch.onnx.export."
    )
    assert not (in_tmp / "bundle").exists()
