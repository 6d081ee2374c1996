"""A finished run folder (or a fixed-hypothesis baseline) -> one result line of the quality suite."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import DataError
from ..metrics.repetition import outputs_with_repeated_ngram
from ..report.runs import load_run
from .suite import RunSpec

CURVE_POINTS = 200
"""At most this many [step, value] pairs of each curve go into a result line (evenly thinned)."""
REPEATS = "repeated_3gram_outputs"
"""The key of an E2E line's count of decoded outputs that repeat one of their own word 3-grams."""


def stored_parameter_count(adapter_dir: Path) -> int | None:
    """Floating-point numbers in ``adapter_model.safetensors`` (what inference loads: the ejected prefix for
    prefix methods; integer counters such as Solo's step are not counted). None if there is no file."""
    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            piece = handle.get_slice(key)
            if piece.get_dtype().startswith(("F", "BF")):
                count = 1
                for size in piece.get_shape():
                    count *= size
                total += count
    return total


def _thin(points: list[list[Any]], limit: int = CURVE_POINTS) -> list[list[Any]]:
    if len(points) <= limit:
        return points
    stride = (len(points) - 1) / (limit - 1)
    return [points[round(i * stride)] for i in range(limit)]


def curves(log: list[dict[str, Any]], dev_key: str) -> dict[str, list]:
    """Training loss, the dev score that selects the best step, Solo's mean t, and the gate trend."""
    loss = [[r["step"], round(float(r["loss"]), 5)] for r in log if "loss" in r]
    dev = [[r["step"], r["eval"][dev_key]] for r in log if isinstance(r.get("eval"), dict) and dev_key in r["eval"]]
    solo = []
    gate = []
    for r in log:
        ts = [v for k, v in r.items() if k.startswith("solo_t[")]
        if ts:
            solo.append([r["step"], round(sum(ts) / len(ts), 5)])
        if isinstance(r.get("gate"), list) and r["gate"]:
            rows = r["gate"]  # (L, l): per layer, per prefix token
            per_token = [round(sum(col) / len(col), 4) for col in zip(*rows)]
            flat = [v for row in rows for v in row]
            gate.append([r["step"], round(sum(flat) / len(flat), 5), round(min(flat), 5), round(max(flat), 5),
                         per_token])
    return {"loss": _thin(loss), "dev": _thin(dev), "solo_t": _thin(solo), "gate": _thin(gate, 21)}


def harvest(spec: RunSpec, run_dir: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """The result line of the finished run in ``run_dir``."""
    run = load_run(run_dir)
    metrics_all = run.metrics
    names = run.metric_names
    metrics = {k: metrics_all.get(k) for k in names}
    best = metrics_all.get("best_dev") or {}
    if run.kind == "e2e":
        dev_key, selection = "dev_loss", (-best["dev_loss"] if "dev_loss" in best else None)
    else:
        dev_key = names[0]
        selection = best.get(dev_key)
    predictions = run_dir / "predictions.txt"
    outputs = predictions.read_text(encoding="utf-8").splitlines() if predictions.exists() else None
    n_inputs = len(outputs) if outputs is not None else None
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    extension = {"grid_extension": spec.grid_extension, "grid_extension_side": spec.extension_side} \
        if spec.grid_extension else {}
    if spec.lr_step is not None:
        extension["lr_step"] = spec.lr_step
    return {
        "protocol": spec.protocol, "task": spec.task, "arm": spec.arm, "base_arm": spec.base_arm,
        "method": spec.method, "seed": spec.seed,
        "trainable_params": metrics_all.get("trainable_params"),
        "stored_params": stored_parameter_count(run_dir / "adapter"),
        "total_params": metrics_all.get("total_params"),
        "steps": metrics_all.get("steps"), "best_step": metrics_all.get("best_step"),
        "n_inputs": n_inputs, "prefix_length": spec.prefix_length,
        "lr": (config.get("optim") or {}).get("lr"), "lr_grid_value": spec.lr, **extension,
        "metrics": metrics, "dev": best, "selection": selection,
        REPEATS: outputs_with_repeated_ngram(outputs) if run.kind == "e2e" and outputs is not None else None,
        "train_seconds": metrics_all.get("train_seconds"), "tokens_per_second": metrics_all.get("tokens_per_second"),
        "final_eval_seconds": metrics_all.get("final_eval_seconds"),
        "peak_memory_mb": metrics_all.get("peak_memory_mb"), "compile": spec.compile,
        "compiled": metrics_all.get("compiled"), "bf16_matmuls": metrics_all.get("bf16_matmuls"),
        "curves": curves(run.log, dev_key),
        "recipe": config, "git_revision": meta.get("git_revision"), "versions": meta.get("versions"),
        "hardware": meta.get("hardware"),
        "run_dir": str(run_dir),
    }


def _data_dir(data_dir: str | None) -> Path:
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("PEFTLAB_DATA_DIR")
    if env:
        return Path(env)
    raise DataError("the template baseline needs the data folder: pass --data-dir or set PEFTLAB_DATA_DIR")


def baseline_record(spec: RunSpec, data_dir: str | None) -> dict[str, Any]:
    """A row that is not trained: the official scorer's numbers on a fixed hypothesis file (all 630 test MRs)."""
    path = _data_dir(data_dir) / "e2e" / "metric_check" / "official_scores.json"
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))[spec.baseline]
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read the {spec.baseline!r} scores ({err})") from None
    metrics = {"BLEU": scores["BLEU_py"], "NIST": scores["NIST_py"], "METEOR": scores["METEOR"],
               "ROUGE_L": scores["ROUGE_L"], "CIDEr": scores["CIDEr"]}
    return {"protocol": spec.protocol, "task": spec.task, "arm": spec.arm, "base_arm": spec.base_arm,
            "method": "template", "seed": spec.seed, "trainable_params": 0, "stored_params": 0,
            "n_inputs": scores.get("n_instances"), "metrics": metrics, "baseline": spec.baseline,
            "source": f"{path.name}:{spec.baseline} (official e2e-metrics scorer on {scores.get('hypotheses')})"}
