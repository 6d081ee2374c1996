"""`peftlab predict RUN_DIR`: the final evaluation of a finished run again, from its saved adapter, with other decoding
or evaluation settings, and without training.

A run folder holds everything its evaluation needs: ``config.yaml`` (the resolved recipe) and ``adapter/`` (the best
step's adapter, in peft's format). :func:`predict` rebuilds the model as ``peftlab train`` had it at its end (the
base model at the run's dtype, the adapter loaded, bf16 frozen weights and the bf16 products' kernels as the run
had them on this machine, the decoding attention), then runs the task's final evaluation: E2E decodes the test MRs
and scores them with the five official metrics; GLUE predicts the dev set and scores it. With the run's own settings
the outputs are the run's ``predictions.txt`` byte for byte on the machine that trained it
(``tests/test_predict.py``); the point is to change them:

    peftlab predict runs/lora decode.num_beams=10 decode.length_penalty=0.9 decode.no_repeat_ngram_size=4
    peftlab predict runs/lora --eval-limit 64 --output-dir runs/lora/predict-first64

Only the keys that do not change the trained adapter may be overridden (:data:`PREDICT_KEYS`). The results go to a
new folder (default ``RUN_DIR/predict-<the overrides>``): ``predictions.txt``, ``metrics.json`` (the scores, the
settings, the time taken), ``meta.json`` and ``config.yaml`` (the recipe it evaluated with); the run itself is not
touched.
"""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from ..errors import ConfigError
from .recipe import Recipe, apply_overrides, recipe_from_dict, with_legacy_values

PREDICT_KEYS = ("decode.", "data.eval_limit", "data.data_dir", "run.bf16", "run.bf16_weight_copies",
                "model.attn_implementation")
"""Recipe keys (a trailing dot: a whole section) that ``peftlab predict`` may override: how the test set is decoded or
predicted, which part of it, and the precision of the frozen base. Everything else made the trained adapter."""


def _allowed(key: str) -> bool:
    return any(key.startswith(k) if k.endswith(".") else key == k for k in PREDICT_KEYS)


def run_recipe(run_dir: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """The recipe of the finished run in ``run_dir`` (its ``config.yaml``, read as the peftlab that wrote it ran it),
    with ``overrides`` (``KEY=VALUE``, keys of :data:`PREDICT_KEYS` only) applied."""
    run_dir = Path(run_dir)
    config, adapter = run_dir / "config.yaml", run_dir / "adapter" / "adapter_config.json"
    if not config.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml; give the folder of a `peftlab train` run (its --output-dir)")
    if not adapter.is_file():
        raise ConfigError(f"{run_dir}: no adapter/ (adapter_config.json); `peftlab train` saves it when the run "
                          "finishes: finish the run first (`peftlab train ... --resume`)")
    for item in overrides:
        key = item.split("=", 1)[0]
        if "=" in item and not _allowed(key):
            raise ConfigError(f"{item!r}: {key} changes what was trained, so predict cannot override it; it may "
                              f"override {', '.join(k + '*' if k.endswith('.') else k for k in PREDICT_KEYS)}")
    stored = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    return recipe_from_dict(apply_overrides(with_legacy_values(stored), list(overrides)), source=str(config))


def default_output_dir(run_dir: str | Path, overrides: Sequence[str] = ()) -> Path:
    """``RUN_DIR/predict`` without overrides, else ``RUN_DIR/predict-<key><value>-...`` (the last part of each key;
    the data folder left out): ``decode.num_beams=4`` gives ``predict-num_beams4``."""
    pairs = [item.split("=", 1) for item in overrides if "=" in item]
    parts = [key.rsplit(".", 1)[-1] + value for key, value in pairs if key != "data.data_dir"]
    name = "-".join(["predict", *parts])
    return Path(run_dir) / re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)


def predict(run_dir: str | Path, overrides: Sequence[str] = (), *, output_dir: str | Path | None = None,
            overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Evaluate the finished run in ``run_dir`` again with ``overrides`` (see the module doc); writes
    ``output_dir`` (default :func:`default_output_dir`) and returns its metrics."""
    from ..hardware import describe, summary
    from ..metrics.ptb import resolve_backend
    from ..model import PeftModel
    from ..zoo import load_tokenizer
    from . import bf16_gemm
    from .rundir import peak_memory_mb, write_run_files
    from .speed import cast_frozen_weights, decoding_attn_implementation, resolve_bf16
    from .tasks import load_task_model, make_task

    run_dir = Path(run_dir)
    recipe = run_recipe(run_dir, overrides)
    out = Path(output_dir) if output_dir is not None else default_output_dir(run_dir, overrides)
    if out.resolve() == run_dir.resolve():
        raise ConfigError(f"--output-dir {out}: that is the run itself; predict writes a new folder beside its files")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} exists; pass --overwrite to replace it, or choose another --output-dir")
        shutil.rmtree(out)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = resolve_bf16(recipe.run.bf16, device) if recipe.run.bf16 == "auto" else bool(recipe.run.bf16)
    recipe = dataclasses.replace(recipe, run=dataclasses.replace(recipe.run, bf16=bf16, output_dir=str(out)))
    if recipe.task == "e2e":  # the scoring needs the official tokenizer (Java) or the opt-in Python port
        resolve_backend()

    # the model as `peftlab train` had it at its end: base, the saved best adapter, bf16 frozen weights, decoding attention
    task = make_task(recipe)
    tokenizer = load_tokenizer(recipe.model.name)
    peft_model = PeftModel.from_pretrained(load_task_model(recipe, task, tokenizer), run_dir / "adapter").to(device)
    if bf16 and recipe.run.bf16_frozen_weights:
        cast_frozen_weights(peft_model, torch.bfloat16)
    decode_attention = decoding_attn_implementation(recipe.model.attn_implementation)
    if decode_attention:
        peft_model.model.set_attn_implementation(decode_attention)
    fp32_matmuls = bf16_gemm.wanted(bf16, device)
    copies = None
    if fp32_matmuls and recipe.run.bf16_weight_copies:
        copies = bf16_gemm.FrozenFp32Copies(p for p in peft_model.parameters() if not p.requires_grad)

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
    started = time.perf_counter()
    with bf16_gemm.fp32_matmuls_for_bf16(fp32_matmuls, copies):
        metrics = task.final_eval(peft_model, tokenizer, out, progress=progress)
    scores = list(metrics)
    seconds = time.perf_counter() - started
    n_inputs = len((out / "predictions.txt").read_text(encoding="utf-8").splitlines())
    metrics.update({
        "run": str(run_dir), "method": recipe.method,
        "task": recipe.task if recipe.task == "e2e" else task.spec.name, "overrides": list(overrides),
        "decode": dataclasses.asdict(recipe.decode) if recipe.task == "e2e" else None, "n_inputs": n_inputs,
        "final_eval_seconds": seconds, "peak_memory_mb": peak_memory_mb(), "bf16": bf16,
        "bf16_matmuls": ("fp32 kernels" if fp32_matmuls else "native") if bf16 else None,
        "trained": _trained_summary(run_dir, scores),
    })
    write_run_files(out, recipe, metrics, task.metadata)
    print(f"[predict] {n_inputs} inputs in {seconds:.1f} s on {summary(describe())}; wrote {out}")
    return metrics


def _trained_summary(run_dir: Path, scores: Sequence[str]) -> dict[str, Any] | None:
    """What the run itself reported for the same scores (its metrics.json), and its best and last step."""
    try:
        run_metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {k: run_metrics[k] for k in (*scores, "best_step", "steps") if k in run_metrics}


__all__ = ["PREDICT_KEYS", "default_output_dir", "predict", "run_recipe"]
