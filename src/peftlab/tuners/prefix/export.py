"""Export a prefix adapter as a HF peft PREFIX_TUNING folder (``prompt_embeddings``, prefix_projection=False).

peft 0.21 stores the ejected prefix as one tensor ``prompt_embeddings`` of shape (l, 2 * L * token_dim) and, in
``get_prompt``, views it as (l, 2L, num_attention_heads, token_dim / num_attention_heads), permutes to
(2L, batch, heads, l, head_dim) and splits it into per-layer (key, value) pairs (index 2i = key of layer i,
2i + 1 = value). So for us token_dim = d_kv = n_kv_heads * head_dim and num_attention_heads = n_kv_heads (the same
as d and n_heads without grouped-query attention).

peft passes the prefix as ``past_key_values``, so real tokens sit at positions l..l+N-1: only an adapter trained
with ``prefix_position_offset=True`` gives the same logits in peft (others are exported with a warning). Gates that
scale keys/values ("kv", "values") are folded into the exported prefix exactly; "logit_bias" and "separate" gates
have no peft equivalent and are refused.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ...config import CONFIG_NAME
from ...errors import AdapterError
from ...io import WEIGHTS_NAME, write_safetensors
from .model import prefix_layers


def export_prefix_to_peft(peft_model, out_dir: str | Path, adapter_name: str) -> Path:
    """Write adapter ``adapter_name`` as a peft PREFIX_TUNING folder; returns the folder."""
    config = peft_model.peft_config[adapter_name]
    spec = config.prefix_spec()
    if spec.gate != "none" and spec.gate_application not in ("kv", "values"):
        raise AdapterError(f"export_to_peft: adapter {adapter_name!r} gates the prefix with "
                           f"gate_application={spec.gate_application!r}, which peft's prefix tuning cannot express; "
                           "only 'kv' and 'values' gates are folded into the exported prefix")
    if config.modules_to_save:
        raise AdapterError(f"export_to_peft: adapter {adapter_name!r} also trains {config.modules_to_save}; peft's "
                           "prefix tuning files hold the prefix only")
    if not spec.position_offset:
        warnings.warn("export_to_peft: peft shifts real positions by num_virtual_tokens; this adapter was trained "
                      "with prefix_position_offset=False, so peft's logits will differ from peftlab's",
                      stacklevel=3)
    layers = prefix_layers(peft_model.model, adapter_name)
    per_layer = []
    with torch.no_grad():
        for _, layer in layers:
            key, value = layer.layer_kv(adapter_name)  # (KV, l, hd)
            gate = layer.gate_values(adapter_name, key, value)
            if gate is not None:
                g = gate[None, :, None]
                key, value = (key * g, value * g) if spec.gate_application == "kv" else (key, value * g)
            per_layer.append(torch.stack([key, value]))  # (2, KV, l, hd)
    stacked = torch.stack(per_layer).float()  # (L, 2, KV, l, hd)
    n_layers, _, n_kv, length, head_dim = stacked.shape
    prompt_embeddings = stacked.permute(3, 0, 1, 2, 4).reshape(length, -1)  # (l, L * 2 * KV * hd)
    task_type = config.task_type or ("CAUSAL_LM" if peft_model._layout.layout.is_decoder else "SEQ_CLS")
    peft_config = {
        "peft_type": "PREFIX_TUNING",
        "task_type": task_type,
        "base_model_name_or_path": config.base_model_name_or_path,
        "revision": config.revision,
        "inference_mode": True,
        "num_virtual_tokens": length,
        "token_dim": n_kv * head_dim,
        "num_transformer_submodules": 1,
        "num_attention_heads": n_kv,
        "num_layers": n_layers,
        "encoder_hidden_size": spec.hidden,
        "prefix_projection": False,
        "init_weights": None,
        "modules_to_save": None,
    }
    out_dir = Path(out_dir)
    write_safetensors({"prompt_embeddings": prompt_embeddings.contiguous()}, out_dir / WEIGHTS_NAME)
    (out_dir / CONFIG_NAME).write_text(json.dumps(peft_config, indent=2) + "\n", encoding="utf-8")
    return out_dir
