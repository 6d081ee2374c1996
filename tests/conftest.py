"""Shared fixtures: tiny random models of each supported family, and the path to ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
torch.set_num_threads(min(2, os.cpu_count() or 1))

VOCAB = 96
ARCHS = ("gpt2", "llama", "bert")
DEVICE = torch.device(os.environ.get("PEFTLAB_TEST_DEVICE", "cpu"))
"""Where the tiny models and their batches live: cpu, or ``PEFTLAB_TEST_DEVICE=cuda`` to run the method contract
(tests/test_method_contract.py) on a GPU (benchmarks/device_check.sh). TF32 is off there, so exact comparisons hold."""
if DEVICE.type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def on_device(value):
    """``value`` (a tensor, or a dict of them) on :data:`DEVICE`."""
    if isinstance(value, dict):
        return {k: on_device(v) for k, v in value.items()}
    return value.to(DEVICE) if isinstance(value, torch.Tensor) else value


def make_tiny(arch: str, seed: int = 0) -> torch.nn.Module:
    """A small random model of ``arch`` (dropout off so outputs are deterministic in train mode too)."""
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)
        return GPT2LMHeadModel(cfg).to(DEVICE)
    if arch == "llama":  # grouped-query attention: 4 query heads share 2 key/value heads
        cfg = LlamaConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=1,
                          eos_token_id=2, pad_token_id=0)
        return LlamaForCausalLM(cfg).to(DEVICE)
    if arch == "bert":
        cfg = BertConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                         vocab_size=VOCAB, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, num_labels=3, pad_token_id=0)
        return BertForSequenceClassification(cfg).to(DEVICE)
    raise ValueError(arch)


def make_batch(arch: str, batch: int = 2, length: int = 9, seed: int = 123) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=gen)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if arch == "bert":
        out["labels"] = torch.randint(0, 3, (batch,), generator=gen)
    else:
        out["labels"] = ids.clone()
    return on_device(out)


def model_output(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs).logits


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository root (CI keeps the same layout)."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}: the tests expect ../shared beside the repo root")
    return path


def assert_same_adapter(want_dir, got_dir, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Two saved adapter folders hold the same tensors (same keys, values within tolerance)."""
    from safetensors.torch import load_file

    want = load_file(str(want_dir / "adapter_model.safetensors"))
    got = load_file(str(got_dir / "adapter_model.safetensors"))
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=atol, rtol=rtol)
