"""The architectures users fine-tune, as random-init local folders with the tiny base's tokenizer:
each gets a sweep with one trial per target preset, and an fp32 export that passes the parity gate.

A random-init model of a real config runs the real module names, attention and export paths at any
size (no hub here). Phi-3 (fused qkv_proj, gate_up_proj) and GPT-NeoX (query_key_value, dense, and
no Model Builder: the dynamo exporter) run in the fast suite, about 40 s; the whole matrix is slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import optuna
import pytest
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lorasweep.objectives.tiny import ensure_tiny_base
from lorasweep.search.cli import main

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}

# The Llama family's names (Llama, Qwen2/3, Mistral, Gemma 2)
LLAMA_ATTENTION = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}
LLAMA_MLP = {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

# model_type -> (config beyond SMALL, the attention preset's modules, the MLP preset's modules)
ARCHITECTURES = {
    "llama": (
        {"num_key_value_heads": 2},
        LLAMA_ATTENTION,
        LLAMA_MLP,
    ),
    "qwen2": (
        {"num_key_value_heads": 2},
        LLAMA_ATTENTION,
        LLAMA_MLP,
    ),
    "qwen3": (
        {"num_key_value_heads": 2, "head_dim": 16},
        LLAMA_ATTENTION,
        LLAMA_MLP,
    ),
    "mistral": (
        {"num_key_value_heads": 2},
        LLAMA_ATTENTION,
        LLAMA_MLP,
    ),
    "phi3": (
        {"num_key_value_heads": 2},
        {"self_attn.qkv_proj", "self_attn.o_proj"},
        {"mlp.gate_up_proj", "mlp.down_proj"},
    ),
    "gemma2": (
        {"num_key_value_heads": 2, "head_dim": 16, "sliding_window": 128},
        LLAMA_ATTENTION,
        LLAMA_MLP,
    ),
    "gpt2": (
        {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 256},
        {"attn.c_attn", "attn.c_proj"},
        {"mlp.c_fc", "mlp.c_proj"},  # c_proj in both blocks: the presets tell them apart
    ),
    "gpt_neox": (
        {},
        {"attention.query_key_value", "attention.dense"},
        {"mlp.dense_h_to_4h", "mlp.dense_4h_to_h"},
    ),
    "opt": (
        {"ffn_dim": 128, "word_embed_proj_dim": 64},
        {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"},
        {"fc1", "fc2"},  # in the decoder layer itself, beside the attention
    ),
}
FAST = ("phi3", "gpt_neox")

SWEEP = """\
study: {{name: {kind}, metric: eval_loss, sampler: {{type: grid, seed: 0}}, n_trials: 3}}
model: {{base: {base}}}
data: {{train_split: "train[:64]", eval_split: "train[1400:1416]"}}
train: {{max_steps: 4, eval_steps: 2, logging_steps: 2, per_device_train_batch_size: 8, r: 4,
        learning_rate: 0.01}}
eval: {{max_samples: 4, max_new_tokens: 6, log_samples: 0}}
promote: {{precisions: [fp32]}}
search_space:
  target_modules: {{type: choice, values: [all-linear, attention, mlp]}}
"""


def build(kind: str, folder: Path) -> Path:
    """A random-init model of the architecture, saved with the tiny base's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_base())
    extra = ARCHITECTURES[kind][0]
    size = {} if kind == "gpt2" else SMALL
    pad = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": pad,
    }
    config = AutoConfig.for_model(kind, vocab_size=len(tokenizer), **size, **extra, **ids)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _matrix(kind: str, folder: Path) -> None:
    base = build(kind, folder / kind)
    (folder / "sweep.yaml").write_text(SWEEP.format(kind=kind, base=base), encoding="utf-8")
    assert main(["-q", "run", "sweep.yaml"]) == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "mlruns" / "optuna.journal"))
    )
    trials = {
        t.params["target_modules"]: t for t in optuna.load_study(study_name=kind, storage=storage).trials
    }
    assert {p: t.state.name for p, t in trials.items()} == dict.fromkeys(
        ("all-linear", "attention", "mlp"), "COMPLETE"
    )

    client = mlflow.MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    params = client.get_run(trials["all-linear"].user_attrs["mlflow_run_id"]).data.params
    assert (params["model.base"], params["model.revision"], params["model.trust_remote_code"]) == (
        str(base),
        "None",
        "False",
    )
    _, attention, mlp = ARCHITECTURES[kind]
    for preset, expected in (("attention", attention), ("mlp", mlp), ("all-linear", attention | mlp)):
        run_id = trials[preset].user_attrs["mlflow_run_id"]
        adapter = Path(client.download_artifacts(run_id, "adapter", str(folder / f"adapter-{preset}")))
        adapted = _adapted(adapter)
        assert adapted == expected, (kind, preset, adapted)

    assert main(["export", "--trial", str(trials["all-linear"].number), "--out", "onnx"]) == 0
    parity = json.loads((folder / "onnx" / "parity.json").read_text())
    assert parity["passed"], parity
    assert [m["name"] for m in parity["models"]] == ["pytorch", "fp32"]


def _adapted(adapter: Path) -> set[str]:
    """The modules the adapter trained, as block.leaf (OPT's fc1/fc2 as the leaf alone)."""
    from safetensors.torch import load_file

    found = set()
    for key in load_file(adapter / "adapter_model.safetensors"):
        path = key.split(".lora_A.")[0] if ".lora_A." in key else None
        if path is not None:
            holder, leaf = path.rsplit(".", 2)[-2:]
            found.add(leaf if holder.isdigit() else f"{holder}.{leaf}")
    return found


@pytest.mark.parametrize("kind", FAST)
def test_presets_resolve_per_architecture_and_the_export_passes_the_gate(kind, in_tmp):
    _matrix(kind, in_tmp)


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in ARCHITECTURES if k not in FAST])
def test_the_whole_architecture_matrix(kind, in_tmp):
    _matrix(kind, in_tmp)


def test_a_preset_the_architecture_cannot_satisfy_is_refused_naming_its_modules(in_tmp, capsys):
    """Mamba has no attention blocks: `attention` is a validation error before any trial."""
    tokenizer = AutoTokenizer.from_pretrained(ensure_tiny_base())
    config = AutoConfig.for_model(
        "mamba", vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, state_size=4
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(in_tmp / "mamba")
    tokenizer.save_pretrained(in_tmp / "mamba")
    sweep = f"""\
study: {{name: mamba, metric: eval_loss, n_trials: 1}}
model: {{base: {in_tmp / "mamba"}, target_modules: attention}}
data: {{train_split: "train[:64]", eval_split: "train[1400:1416]"}}
search_space:
  learning_rate: {{type: choice, values: [0.001]}}
"""
    (in_tmp / "sweep.yaml").write_text(sweep, encoding="utf-8")
    assert main(["run", "sweep.yaml"]) == 2
    err = capsys.readouterr().err
    assert "model.target_modules=attention must find attention projections in the base model" in err
    assert "Its linear layers are dt_proj, in_proj, lm_head, out_proj, x_proj" in err
    assert "Traceback" not in err
