"""Model layouts: where each architecture keeps its blocks, attention projections, FFN and norms.

Methods never special-case model names: they ask the layout for a *role* ("q", "v", "o", "ffn_down", "block", ...)
and get back the module, its kind (``linear`` = ``nn.Linear`` with a (out, in) weight, ``conv1d`` = transformers'
``Conv1D`` with a transposed (in, out) weight) and, for fused projections, the slice of the output that belongs to
the role. Paths are relative to the transformer body (``model.base_model`` in transformers: ``GPT2Model``,
``LlamaModel``, ``BertModel``...), so a layout serves every head class (``*ForCausalLM``,
``*ForSequenceClassification``, the bare model).

Adding an architecture is one :func:`register_layout` call (see docs/layouts.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from .errors import UnsupportedModelError

# Roles a layout may map. q/k/v may share one fused module (``qkv``).
ATTENTION_ROLES = ("q", "k", "v", "o")
FFN_ROLES = ("ffn_gate", "ffn_up", "ffn_down")
ROLE_ALIASES = {"up": "ffn_up", "down": "ffn_down", "gate": "ffn_gate", "fc_in": "ffn_up", "fc_out": "ffn_down"}


@dataclass(frozen=True)
class AttentionShape:
    """Head geometry of one architecture instance."""

    hidden_size: int
    n_heads: int
    n_kv_heads: int  # < n_heads for grouped-query attention
    head_dim: int

    @property
    def q_size(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.n_kv_heads * self.head_dim


@dataclass(frozen=True)
class ModelLayout:
    """Where things live in one family of architectures (paths relative to a block unless said otherwise)."""

    family: str
    model_types: tuple[str, ...]  # ``config.model_type`` values this layout serves
    blocks: str  # path from the transformer body to the ModuleList of blocks
    embeddings: str  # path from the body to the module whose output feeds block 0
    final_norm: str | None  # path from the body to the norm after the last block (None for post-LN encoders)
    attention: str  # the attention module inside a block
    projections: dict[str, str]  # role -> path inside a block, for q, k, v (or qkv), o, ffn_*
    weight_kind: str  # "linear" or "conv1d" for every projection of this family
    attn_norm: str | None  # norm before attention (pre-LN) or after it (post-LN encoders)
    ffn_norm: str | None
    ffn: str  # the FFN module inside a block
    attn_output: str  # module whose output is the attention sub-layer's output before the residual add
    is_decoder: bool
    pre_norm: bool
    shape_from_config: Callable[[object], AttentionShape] = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    pooler: str | None = None
    """Path from the body to the pooler a sequence classifier reads (BERT: [CLS] -> dense -> tanh), if the family has
    one. It trains with the classifier head by default (``modules_to_save``), as RoBERTa's classification head
    (dense + output) does: a frozen pooler that was never trained for [CLS] (sentence-embedding checkpoints such as
    all-MiniLM-L6-v2) left every PEFT method at chance on STS-B and CoLA (docs/benchmarks.md)."""

    def has_fused_qkv(self) -> bool:
        return "qkv" in self.projections


_LAYOUTS: dict[str, ModelLayout] = {}


def register_layout(layout: ModelLayout, *, override: bool = False) -> None:
    """Make ``layout`` serve every ``config.model_type`` it names."""
    for model_type in layout.model_types:
        if model_type in _LAYOUTS and not override:
            raise ValueError(f"model_type {model_type!r} already has the layout {_LAYOUTS[model_type].family!r}")
        _LAYOUTS[model_type] = layout


def supported_model_types() -> list[str]:
    return sorted(_LAYOUTS)


def _gpt2_shape(cfg) -> AttentionShape:
    return AttentionShape(cfg.n_embd, cfg.n_head, cfg.n_head, cfg.n_embd // cfg.n_head)


def _llama_shape(cfg) -> AttentionShape:
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    return AttentionShape(cfg.hidden_size, n_heads, n_kv, head_dim)


def _bert_shape(cfg) -> AttentionShape:
    n_heads = cfg.num_attention_heads
    return AttentionShape(cfg.hidden_size, n_heads, n_heads, cfg.hidden_size // n_heads)


register_layout(ModelLayout(
    family="gpt2", model_types=("gpt2",),
    blocks="h", embeddings="drop", final_norm="ln_f", attention="attn",
    projections={"qkv": "attn.c_attn", "o": "attn.c_proj", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"},
    weight_kind="conv1d", attn_norm="ln_1", ffn_norm="ln_2", ffn="mlp", attn_output="attn.c_proj",
    is_decoder=True, pre_norm=True, shape_from_config=_gpt2_shape,
))
register_layout(ModelLayout(
    family="llama", model_types=("llama", "mistral", "qwen2", "qwen3", "smollm3"),
    blocks="layers", embeddings="embed_tokens", final_norm="norm", attention="self_attn",
    projections={"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
                 "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"},
    weight_kind="linear", attn_norm="input_layernorm", ffn_norm="post_attention_layernorm", ffn="mlp",
    attn_output="self_attn.o_proj", is_decoder=True, pre_norm=True, shape_from_config=_llama_shape,
))
register_layout(ModelLayout(
    family="bert", model_types=("bert", "roberta", "xlm-roberta"),
    blocks="encoder.layer", embeddings="embeddings", final_norm=None, attention="attention.self",
    projections={"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "o": "attention.output.dense", "ffn_up": "intermediate.dense", "ffn_down": "output.dense"},
    weight_kind="linear", attn_norm="attention.output.LayerNorm", ffn_norm="output.LayerNorm", ffn="intermediate",
    attn_output="attention.output.dense", is_decoder=False, pre_norm=False, shape_from_config=_bert_shape,
    pooler="pooler",
))


@dataclass(frozen=True)
class RoleTarget:
    """A role resolved in one block: the module, its path from the top model, and its output slice."""

    block_index: int
    role: str
    path: str  # dotted path from the top-level model
    module: nn.Module
    out_slice: slice | None  # part of a fused projection's output that is this role (None: all of it)


class ResolvedLayout:
    """A :class:`ModelLayout` bound to one model instance: paths from the top model, head geometry, modules."""

    def __init__(self, model: nn.Module, layout: ModelLayout):
        self.layout = layout
        self.model = model
        self.body_prefix = _body_prefix(model)
        self.shape = layout.shape_from_config(model.config)
        self.n_blocks = len(self.blocks())

    # --- paths -------------------------------------------------------------------------------------------------
    def body_path(self, rel: str) -> str:
        return f"{self.body_prefix}.{rel}" if self.body_prefix else rel

    def block_path(self, index: int, rel: str | None = None) -> str:
        base = self.body_path(f"{self.layout.blocks}.{index}")
        return f"{base}.{rel}" if rel else base

    def blocks(self) -> nn.ModuleList:
        return self.model.get_submodule(self.body_path(self.layout.blocks))

    def embeddings(self) -> nn.Module:
        return self.model.get_submodule(self.body_path(self.layout.embeddings))

    def pooler(self) -> tuple[str, nn.Module] | None:
        """(path from the top model, module) of the body's pooler, or None where the family has none or this model
        was built without it (``RobertaForSequenceClassification`` has ``add_pooling_layer=False``)."""
        if self.layout.pooler is None:
            return None
        path = self.body_path(self.layout.pooler)
        try:
            module = self.model.get_submodule(path)
        except AttributeError:
            return None
        return (path, module) if isinstance(module, nn.Module) else None

    # --- roles -------------------------------------------------------------------------------------------------
    def available_roles(self) -> list[str]:
        roles = [r for r in self.layout.projections if r != "qkv"]
        if self.layout.has_fused_qkv():
            roles = ["q", "k", "v"] + roles
        return roles

    def qkv_slices(self) -> dict[str, slice]:
        """Output slices of q, k and v inside a fused qkv projection ([q | k | v], GQA-aware)."""
        q, kv = self.shape.q_size, self.shape.kv_size
        return {"q": slice(0, q), "k": slice(q, q + kv), "v": slice(q + kv, q + 2 * kv)}

    def role_target(self, block_index: int, role: str) -> RoleTarget:
        role = ROLE_ALIASES.get(role, role)
        projections = self.layout.projections
        if role in projections:
            path = self.block_path(block_index, projections[role])
            return RoleTarget(block_index, role, path, self.model.get_submodule(path), None)
        if role in ("q", "k", "v") and "qkv" in projections:
            path = self.block_path(block_index, projections["qkv"])
            return RoleTarget(block_index, role, path, self.model.get_submodule(path), self.qkv_slices()[role])
        raise KeyError(role)


def _body_prefix(model: nn.Module) -> str:
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and isinstance(getattr(model, prefix, None), nn.Module):
        return prefix
    return ""


def get_layout(model: nn.Module) -> ResolvedLayout:
    """The layout of ``model`` (a transformers model), or :class:`UnsupportedModelError` saying how to add one."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _LAYOUTS:
        raise UnsupportedModelError(
            f"peftlab has no layout for architecture {type(model).__name__} (config.model_type={model_type!r}). "
            f"Supported model types: {', '.join(supported_model_types())}. To add one, describe where its blocks, "
            "attention projections, FFN and norms live with peftlab.layout.register_layout(ModelLayout(...)); "
            "see docs/layouts.md."
        )
    return ResolvedLayout(model, _LAYOUTS[model_type])
