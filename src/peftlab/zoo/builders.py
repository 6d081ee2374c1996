"""Builders: turn a source package's files into a plain Hugging Face folder (fp32 safetensors + tokenizer).

Each builder writes into `context.output_dir` (a staging folder; the caller publishes it atomically and writes the
manifest) and returns the checks it ran, which end up in the manifest. torch/transformers are imported lazily.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelInstallError
from .progress import ProgressReporter

SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_WEIGHTS_FILE = "model/model.safetensors"
MINILM_FOLDER = "model"
#: Files of the MiniLM package folder that are not part of the model (git/hub metadata, training-data listing).
_MINILM_SKIPPED_FILES = {".gitattributes", "data_config.json"}

#: Plain English used to check a converted causal LM (its perplexity is about 5 for SmolLM2, ~50,000 at random init).
REFERENCE_SENTENCE = (
    "Paris is the capital of France and one of the most visited cities in the world. "
    "I went to the store yesterday to buy some bread and milk for breakfast."
)
MAX_REFERENCE_PERPLEXITY = 100.0
MAX_LOGIT_DIFFERENCE = 1e-4


@dataclass
class BuildContext:
    """Everything a builder needs: the source package folder, the folder to fill, and the progress reporter."""

    model_name: str
    package_dir: Path
    output_dir: Path
    source_files: dict[str, Path]
    """Verified source files (sha256 checked), keyed by their path relative to the package folder."""
    progress: ProgressReporter


def _check(condition: bool, model_name: str, what: str) -> None:
    if not condition:
        raise ModelInstallError(
            f"zoo model '{model_name}': conversion check failed: {what}. The cache was not installed; "
            "please report this with your torch/transformers versions."
        )


def _update_json(path: Path, **changes: Any) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return data


def build_smollm2(context: BuildContext) -> dict[str, Any]:
    """Dequantize the SmolLM2 Q4_1 GGUF into an fp32 safetensors folder with a portable tokenizer.

    Recipe: load with `gguf_file=`; `save_pretrained` refuses a GGUF-loaded model, so drop
    `config.quantization_config`, rebuild the model from the config, copy the state dict strictly, re-tie the
    embeddings and save. The tokenizer keeps GGUF's special tokens (bos `<|im_start|>`, eos = pad `<|im_end|>`,
    unk `<|endoftext|>`), adds no bos, and its `tokenizer_config.json` names `PreTrainedTokenizerFast` so
    transformers 4.x loads it too. Checks: strict weight copy, tied embeddings, parameter count, logits of the saved
    folder equal to the GGUF model's, sane perplexity on plain English, no `<|im_start|>` prepended.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:  # pragma: no cover - dependencies of peftlab
        raise ModelInstallError(f"zoo model '{context.model_name}' needs torch and transformers: {err}") from err
    from .._optional import missing_message, require

    try:  # transformers reads GGUF files with the optional `gguf` package: check before the long load
        require("gguf", "zoo", f"zoo model '{context.model_name}' (reading its GGUF file)")
    except ImportError as err:
        raise ModelInstallError(str(err)) from err
    progress = context.progress
    gguf_path = context.source_files[SMOLLM2_GGUF_FILE]
    source_dir = str(gguf_path.parent)
    output_dir = context.output_dir

    with progress.step(f"loading and dequantizing {gguf_path.name} (20-30 s on 2 cores)"):
        try:
            gguf_model = AutoModelForCausalLM.from_pretrained(
                source_dir, gguf_file=gguf_path.name, dtype=torch.float32
            ).eval()
        except ImportError as err:
            raise ModelInstallError(
                missing_message("the gguf package", "zoo", f"zoo model '{context.model_name}' (reading its GGUF file)")
                + f" ({err})"
            ) from err

    with progress.step("rebuilding as a plain fp32 model and saving model.safetensors"):
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain_model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain_model.load_state_dict(gguf_model.state_dict(), strict=True)
        plain_model.tie_weights()
        _check(
            plain_model.get_input_embeddings().weight.data_ptr() == plain_model.get_output_embeddings().weight.data_ptr(),
            context.model_name,
            "input and output embeddings are not tied after tie_weights()",
        )
        parameter_count = sum(parameter.numel() for parameter in plain_model.parameters())
        plain_model.save_pretrained(output_dir)
        del plain_model
        # transformers 5 stores RoPE's base only in `rope_parameters`; 4.x reads the top-level `rope_theta` and
        # would silently fall back to 10,000 without it.
        rope_theta = float(getattr(config, "rope_parameters", {}).get("rope_theta", 100000.0))
        _update_json(output_dir / "config.json", rope_theta=rope_theta)

    with progress.step("converting the tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=gguf_path.name)
        eos_token_id = config.eos_token_id
        _check(tokenizer.eos_token_id == eos_token_id, context.model_name, "tokenizer and config disagree on eos")
        if tokenizer.pad_token is None:  # the GGUF sets pad = eos; keep that convention if a version drops it
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.save_pretrained(output_dir)
        _update_json(
            output_dir / "tokenizer_config.json",
            tokenizer_class="PreTrainedTokenizerFast",  # 5.x writes "TokenizersBackend", unknown to 4.x
            add_bos_token=False,
            add_eos_token=False,
            model_max_length=int(config.max_position_embeddings),
            pad_token=tokenizer.pad_token,
            is_local=None,
            local_files_only=None,
        )

    with progress.step("checking the saved folder against the GGUF model"):
        saved_tokenizer = AutoTokenizer.from_pretrained(output_dir)
        saved_model = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32).eval()
        input_ids = saved_tokenizer(REFERENCE_SENTENCE, return_tensors="pt").input_ids
        _check(
            saved_tokenizer.bos_token_id not in input_ids[0, :1].tolist(),
            context.model_name,
            f"the tokenizer prepends {saved_tokenizer.bos_token}",
        )
        _check(
            saved_tokenizer.pad_token is not None and saved_tokenizer.pad_token_id == eos_token_id,
            context.model_name,
            f"pad token {saved_tokenizer.pad_token!r} is not the eos token",
        )
        with torch.no_grad():
            gguf_logits = gguf_model(input_ids).logits
            saved_output = saved_model(input_ids, labels=input_ids)
        max_logit_difference = float((gguf_logits - saved_output.logits).abs().max())
        perplexity = math.exp(float(saved_output.loss))
        _check(
            max_logit_difference <= MAX_LOGIT_DIFFERENCE,
            context.model_name,
            f"saved model's logits differ from the GGUF model's by {max_logit_difference:.3g}",
        )
        _check(
            perplexity < MAX_REFERENCE_PERPLEXITY,
            context.model_name,
            f"perplexity {perplexity:.1f} on a plain English sentence (expected < {MAX_REFERENCE_PERPLEXITY:.0f})",
        )
    progress.info(f"checks passed: logits match the GGUF model (max diff {max_logit_difference:.2g}), "
                  f"perplexity {perplexity:.1f} on a reference sentence")
    return {
        "parameter_count": parameter_count,
        "max_abs_logit_difference_vs_gguf": max_logit_difference,
        "reference_perplexity": round(perplexity, 3),
        "reference_sentence": REFERENCE_SENTENCE,
        "bos_prepended": False,
        "pad_token": saved_tokenizer.pad_token,
        "eos_token": saved_tokenizer.eos_token,
    }


def build_minilm(context: BuildContext) -> dict[str, Any]:
    """Copy the package's Hugging Face folder (weights, config, tokenizer, sentence-transformers pooling files)."""
    source_dir = context.package_dir / MINILM_FOLDER
    with context.progress.step(f"copying {source_dir}"):
        for source_path in sorted(source_dir.rglob("*")):
            relative_path = source_path.relative_to(source_dir)
            if source_path.is_dir() or relative_path.name in _MINILM_SKIPPED_FILES:
                continue
            target_path = context.output_dir / relative_path
            target_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source_path, target_path)
    config = json.loads((context.output_dir / "config.json").read_text(encoding="utf-8"))
    _check(config.get("model_type") == "bert", context.model_name, f"config.json has model_type {config.get('model_type')!r}")
    return {"copied_from": str(source_dir), "model_type": config["model_type"]}
