"""Model layouts resolve the same roles on every family, with the right head geometry."""
from __future__ import annotations

import pytest
import torch.nn as nn
from conftest import make_tiny
from transformers import GPT2Config, GPT2Model, RobertaConfig, RobertaForSequenceClassification
from transformers.pytorch_utils import Conv1D

from peftlab.layout import get_layout


@pytest.mark.parametrize("arch,kind,n_kv", [("gpt2", Conv1D, 4), ("llama", nn.Linear, 2), ("bert", nn.Linear, 4)])
def test_roles_and_heads(arch, kind, n_kv):
    layout = get_layout(make_tiny(arch))
    assert layout.n_blocks == 3
    assert (layout.shape.n_heads, layout.shape.n_kv_heads, layout.shape.head_dim) == (4, n_kv, 8)
    for role in ("q", "k", "v", "o", "ffn_up", "ffn_down"):
        target = layout.role_target(2, role)
        assert isinstance(target.module, kind)
        assert ".2." in target.path
    assert layout.layout.is_decoder == (arch != "bert")


def test_gpt2_fused_qkv_slices():
    layout = get_layout(make_tiny("gpt2"))
    slices = layout.qkv_slices()
    assert (slices["q"], slices["k"], slices["v"]) == (slice(0, 32), slice(32, 64), slice(64, 96))
    assert layout.role_target(0, "v").path == "transformer.h.0.attn.c_attn"


def test_bare_body_model_and_roberta():
    bare = get_layout(GPT2Model(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=30)))
    assert bare.body_prefix == "" and bare.block_path(1, "attn") == "h.1.attn"
    roberta = RobertaForSequenceClassification(RobertaConfig(num_hidden_layers=2, hidden_size=16,
                                                             num_attention_heads=2, intermediate_size=32,
                                                             vocab_size=40))
    layout = get_layout(roberta)
    assert layout.layout.family == "bert"
    assert layout.role_target(1, "q").path == "roberta.encoder.layer.1.attention.self.query"
