"""The prefix joins the attention computation through transformers' ``AttentionInterface``.

In transformers 5.x every attention module of GPT-2, the Llama family and BERT/RoBERTa computes q/k/v (after RoPE and
after the KV-cache update) and then calls ``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation,
eager_attention_forward)(module, query, key, value, attention_mask, **kwargs)``, forwarding its own ``**kwargs``.
That call is the boundary we hook into, without copying any modeling code:

* :class:`~peftlab.tuners.prefix.layer.PrefixLayer` is attached to the attention module and hooks its calls. Only
  while the attention module runs, it switches ``config._attn_implementation`` to :data:`PREFIX_ATTENTION` and
  passes the layer's prefix as the keyword argument :data:`PREFIX_KWARG`. The masks were already built by the model
  body with the original implementation ("sdpa" or "eager"), so they arrive in exactly the format that
  implementation expects.
* :func:`prefix_attention` (registered under :data:`PREFIX_ATTENTION`) prepends the prefix keys/values (per KV head,
  expanded over batch x beams) to the real ones, prepends l "attend" columns to the mask (or log-gate biases), and
  calls the original implementation.

The prefix joins *after* the cache update, so the cache never holds it: cached and uncached generation compute the
same thing, and beam reordering of the cache needs nothing special. When the adapter is disabled or inactive the
hooks do not switch anything, so the model runs its own code path bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PREFIX_ATTENTION = "peftlab_prefix"
"""Name of the attention implementation registered with transformers' AttentionInterface."""
PREFIX_KWARG = "peftlab_prefix"
"""Keyword argument that carries a :class:`PrefixPayload` from the hook to :func:`prefix_attention`."""
SUPPORTED_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass
class PrefixPayload:
    """One layer's prefix for one forward call."""

    key: torch.Tensor  # (n_kv_heads, l, head_dim)
    value: torch.Tensor  # (n_kv_heads, l, head_dim)
    log_bias: torch.Tensor | None = None  # (l,): added to the prefix columns of the attention logits
    separate: bool = False  # a separate softmax over the prefix, added to the attention output
    delegate: Callable | None = None  # the implementation the model was using
    upcast: bool = False  # GPT-2 eager with reorder_and_upcast_attn: use the module's own upcast attention


def _attention_mask_columns(mask: torch.Tensor | None, query: torch.Tensor, kv_len: int, prefix_len: int,
                            log_bias: torch.Tensor | None, causal: bool) -> torch.Tensor | None:
    """The mask for [prefix | real] keys: l leading "attend" columns (plus ``log_bias``) before ``mask``.

    ``mask`` is what the original implementation would get: None, a boolean mask (True = attend, sdpa) or an
    additive float mask (eager), shaped (B or 1, 1 or H, Q, S). ``causal``: None means "causal" to sdpa (top-left
    aligned, as ``is_causal=True`` in torch), so that case gets an explicit causal mask here.
    """
    q_len = query.shape[2]
    if mask is None:
        if causal and q_len > 1:
            mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril()[None, None]
        elif log_bias is None:
            return None  # nothing is masked: the prefix is visible to every query too
        else:
            mask = torch.ones(1, 1, q_len, kv_len, dtype=torch.bool, device=query.device)
    if log_bias is not None and mask.dtype == torch.bool:  # a bias needs an additive mask
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~mask, torch.finfo(query.dtype).min)
    shape = (*mask.shape[:-1], prefix_len)
    if mask.dtype == torch.bool:
        columns = torch.ones(shape, dtype=torch.bool, device=mask.device)
    elif log_bias is None:
        columns = torch.zeros(shape, dtype=mask.dtype, device=mask.device)
    else:
        columns = log_bias.to(device=mask.device, dtype=mask.dtype).expand(shape)
    return torch.cat([columns, mask], dim=-1)  # (B|1, 1|H, Q, l + S)


def _expand_prefix(prefix: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(KV, l, hd) -> (B, KV, l, hd) in ``like``'s dtype and device, B = batch x beams of the call."""
    return prefix.to(device=like.device, dtype=like.dtype).unsqueeze(0).expand(like.shape[0], -1, -1, -1)


def separate_prefix_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float,
                              dropout: float, training: bool) -> torch.Tensor:
    """softmax(q P_k^T * scaling) P_v over the prefix alone (every query sees every prefix token).

    query (B, H, Q, hd); key/value (KV, l, hd) with H a multiple of KV (query head h uses KV head h // (H/KV), as
    transformers' repeat_kv). Returns (B, Q, H, hd), the layout attention implementations return.
    """
    n_rep = query.shape[1] // key.shape[0]
    key = key.to(query.dtype).repeat_interleave(n_rep, dim=0)  # (H, l, hd)
    value = value.to(query.dtype).repeat_interleave(n_rep, dim=0)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (B, H, Q, l)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=training)
    return torch.matmul(probs, value).transpose(1, 2)  # (B, H, Q, hd) -> (B, Q, H, hd)


def generic_eager_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                            **kwargs):
    """Plain eager attention, for models whose modeling file has no ``eager_attention_forward`` to delegate to.

    query (B, H, Q, hd); key/value (B, KV, S, hd); an additive float mask. Returns ((B, Q, H, hd), weights).
    """
    n_rep = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(n_rep, dim=1), value.repeat_interleave(n_rep, dim=1)  # (B, H, S, hd)
    scaling = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2), weights


def prefix_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, **kwargs):
    """Attention over [prefix | real] keys/values, computed by the model's original implementation.

    query (B, H, Q, hd); key/value (B, KV, S, hd) as the model produced them (after RoPE and the cache update).
    """
    payload: PrefixPayload | None = kwargs.pop(PREFIX_KWARG, None)
    delegate = payload.delegate if payload is not None and payload.delegate else ALL_ATTENTION_FUNCTIONS["sdpa"]
    if payload is None:
        return delegate(module, query, key, value, attention_mask, **kwargs)
    if payload.separate:  # LLaMA-Adapter-style gated prefix term: the real attention is untouched
        output, weights = delegate(module, query, key, value, attention_mask, **kwargs)
        scaling = kwargs.get("scaling") or 1.0 / math.sqrt(query.shape[-1])
        extra = separate_prefix_attention(query, payload.key, payload.value, scaling, kwargs.get("dropout", 0.0),
                                          module.training)
        return output + extra.to(output.dtype), weights
    is_causal = kwargs.get("is_causal")
    causal = (getattr(module, "is_causal", True) if is_causal is None else is_causal)
    causal = causal and delegate is ALL_ATTENTION_FUNCTIONS.get("sdpa")  # eager masks are always materialized
    prefix_len = payload.key.shape[1]
    attention_mask = _attention_mask_columns(attention_mask, query, key.shape[2], prefix_len, payload.log_bias,
                                             causal)
    key = torch.cat([_expand_prefix(payload.key, key), key], dim=2)  # (B, KV, l + S, hd)
    value = torch.cat([_expand_prefix(payload.value, value), value], dim=2)
    if payload.upcast:
        return module._upcast_and_reordered_attn(query, key, value, attention_mask)
    return delegate(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)
