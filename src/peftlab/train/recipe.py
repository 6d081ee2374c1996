"""Training recipes: typed dataclasses loaded from YAML (``recipes/<task>/<model>/<method>.yaml``) with
``key=value`` overrides (``optim.lr=1e-3``, ``method_args.r=8``). Every field has an attribute docstring, which
is the CLI help (``peftlab train --help-recipe``).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..config import _coerce, field_docs
from ..errors import ConfigError


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2; PyYAML's 1.1 rules need ``1.0e-3``)."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _yaml_load(text: str):
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)


@dataclass
class ModelArgs:
    name: str = "smollm2-135m"
    """Zoo name (`peftlab models list`), local folder, or hub id."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype of the frozen base weights (adapters always train in fp32)."""
    disable_dropout: bool = False
    """Set every dropout of the base model to 0 (deterministic runs; adapter dropout is the method's own knob)."""
    fast_dropout: bool = True
    """The base model's dropout layers draw their CPU masks with peftlab's cheaper dropout (peftlab.tuners.dropout:
    the same p to within 1/65536 and the same expectation; a GPT-2 PEFT step 2-6 % faster on the CPU); false:
    torch's nn.Dropout, as transformers builds the model. Other devices use torch's dropout either way."""
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"
    """Attention kernel: auto = eager on CPU (faster for E2E-length sequences in training, benchmarks/), sdpa on GPU."""
    train_pooler: bool = True
    """GLUE: the pooler the classifier reads (BERT's [CLS] dense + tanh) trains and is saved with the classifier head,
    as RoBERTa's classification head does; false: the classifier alone (peft's default). Applies when the method's
    modules_to_save is not given; full fine-tuning trains everything anyway."""


@dataclass
class DataArgs:
    data_dir: str | None = None
    """Folder holding e2e/ and glue/ (default: $PEFTLAB_DATA_DIR)."""
    glue_task: str = "sst2"
    """GLUE task for task=glue (cola, sst2, mrpc, rte, stsb, wnli, qnli)."""
    train_limit: int | None = None
    """Use only this many training examples (None: all)."""
    eval_limit: int | None = None
    """Evaluate on only this many dev/test inputs (unique MRs for E2E); None: all."""
    dev_limit: int | None = 128
    """E2E: dev examples for the held-out loss that selects the best step (None: the whole dev set)."""
    subset: Literal["first", "random", "stratified"] = "first"
    """How train_limit/eval_limit choose examples (with run.seed); recorded in the run's metadata."""
    mr_format: str = "lora"
    """E2E meaning-representation linearization (peftlab.data.linearize_mr): lora, raw, plain."""
    max_length: int = 256
    """Truncate training sequences to this many tokens."""
    pack_per_row: int = 1
    """E2E: examples per row of a batch. 1 = one example per row, padded to the batch's longest (the default). k > 1
    = pack each batch (training and dev loss) into ceil(batch / k) rows, each example with its own positions and
    attending only to itself: the same loss on less padding (E2E batches of 8 are ~27 % padding; 2 leaves ~1 %)."""


@dataclass
class OptimArgs:
    lr: float = 2e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    schedule: Literal["linear", "constant", "cosine"] = "linear"
    """Learning-rate schedule after warm-up."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    epochs: float = 1.0
    """Passes over the training data (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps."""
    batch_size: int = 8
    """Examples per optimizer step and process (before gradient accumulation)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    label_smoothing: float = 0.0
    """Label smoothing on target tokens (the LoRA paper's E2E recipe uses 0.1)."""
    clip_grad_norm: float | None = None
    """Clip the gradient norm (None: no clipping, as in the LoRA recipe)."""
    fused: bool = True
    """AdamW's fused kernel (``torch.optim.AdamW(fused=True)``: one pass over every tensor) where the device has one
    (CPU and CUDA do), else the per-tensor loop. The same update to fp32 rounding; on 2 CPU cores it took full
    fine-tuning of a GPT-2-small-shaped model from 2.28 to 0.53 s a step, the gated prefix from 0.37 to 0.22 s
    (docs/training.md, Speed). false: the per-tensor loop (what recipes without this field ran, before 2026-12-07)."""


@dataclass
class DecodeArgs:
    num_beams: int = 1
    """Beam width (1: greedy)."""
    max_new_tokens: int = 64
    """Longest generated text."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating n-grams of this size (0: off; the LoRA recipe uses 4)."""
    no_repeat_ngram_scope: Literal["output", "sequence"] = "output"
    """Where an n-gram may not repeat: within the output (the LoRA paper's E2E beam search: an output may still copy
    its MR's names) or over prompt and output (``generate``'s ``no_repeat_ngram_size`` of a decoder-only model, which
    keeps an E2E output from copying a 4-gram of its MR: "Crowne Plaza Hotel" came out as "Crown Plaza Hotel").
    Runs before 2026-12-07 with a nonzero size blocked over the sequence."""
    length_penalty: float = 1.0
    """Beam-search length penalty (LoRA paper 0.9, its repo 0.8)."""
    batch_size: int = 32
    """Inputs decoded together."""
    engine: Literal["peftlab", "transformers"] = "peftlab"
    """Decoding loop: peftlab's (greedy and beam search, ``generate``'s tokens byte for byte, faster: finished rows
    leave the batch, beam search prefills each prompt once) or plain ``generate`` (docs/training.md, Speed)."""


@dataclass
class RunArgs:
    output_dir: str = "runs/run"
    """Run folder: metrics.json, predictions, adapter/, config.yaml, checkpoint/."""
    seed: int = 0
    """Seed for initialisation, data order and subsets."""
    bf16: bool | Literal["auto"] = False
    """bf16 autocast for the frozen base (adapter weights stay fp32). ``auto``: bf16 where this machine multiplies
    bf16 natively (a CUDA GPU with bf16; a CPU with AVX512-BF16, AMX or Arm BF16), else fp32: on a CPU without it
    bf16 is emulated and several times slower than fp32 (peftlab.hardware). The run folder's config.yaml records the
    choice (true/false)."""
    bf16_frozen_weights: bool = True
    """With run.bf16: store the frozen base weights in bf16 (autocast casts them at every op anyway: this saves the
    copies and half their memory); every trainable tensor stays fp32."""
    bf16_weight_copies: bool = True
    """With run.bf16 on a CPU that only emulates bf16 (its bf16 products then run through fp32 kernels): read the
    frozen weights from fp32 copies made once, instead of upcasting them at every product. The same bits, ~10-20 %
    faster training and decoding, 4 more bytes of memory a frozen parameter; false saves that memory. No effect
    where bf16 is native or the run is fp32."""
    gradient_checkpointing: bool = False
    """Recompute block activations in backward (less memory, more time)."""
    compile: bool = False
    """torch.compile each transformer block (dynamic shapes): faster steps after a one-time compile (~35 s on 2 CPU
    cores for SmolLM2); pays off for runs of more than a few hundred steps."""
    eval_every: int | None = None
    """Evaluate every N optimizer steps (None: once per epoch and at the end)."""
    log_every: int = 10
    """Log loss and throughput every N optimizer steps."""
    checkpoint_every: int | None = None
    """Write a resumable checkpoint every N steps (None: at each evaluation and at the end)."""
    report_to: str = "auto"
    """Trackers besides metrics.jsonl, through accelerate: auto (TensorBoard if installed; W&B if installed and
    WANDB_API_KEY/WANDB_MODE is set), none, or a comma-separated list (tensorboard,wandb,mlflow,...)."""


@dataclass
class Recipe:
    task: Literal["e2e", "glue"] = "e2e"
    """The task: E2E NLG (causal LM) or a GLUE task (sequence classification)."""
    method: str = "lora"
    """PEFT method (peftlab train --list-methods)."""
    method_args: dict[str, Any] = field(default_factory=dict)
    """Fields of the method's config (peftlab methods <name>)."""
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    decode: DecodeArgs = field(default_factory=DecodeArgs)
    run: RunArgs = field(default_factory=RunArgs)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


LEGACY_VALUES: dict[tuple[str, str], Any] = {("optim", "fused"): False, ("model", "train_pooler"): False,
                                             ("model", "fast_dropout"): False}
"""What a recipe written before a field existed ran with, where that differs from the field's default: a stored
recipe (a run folder's config.yaml, a quality-suite result line) without the field is read with this value."""
LEGACY_TASKS: dict[tuple[str, str], tuple[str, ...]] = {("model", "train_pooler"): ("glue",)}
"""Fields of :data:`LEGACY_VALUES` that only changed what runs for these tasks (a sequence classifier's head): for
another task's recipe the missing field reads as its default, as if it had always been there."""


def legacy_value(section: str, key: str, task: str | None, default: Any = None) -> Any:
    """What a stored recipe of ``task`` without the field ``section.key`` ran with: :data:`LEGACY_VALUES`, else
    ``default``."""
    tasks = LEGACY_TASKS.get((section, key))
    if (section, key) in LEGACY_VALUES and (tasks is None or task in tasks):
        return LEGACY_VALUES[(section, key)]
    return default


def with_legacy_values(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the recipe dict ``data`` with :data:`LEGACY_VALUES` filled in where a field is missing (for the
    recipe's own task, :data:`LEGACY_TASKS`)."""
    data = _plain(data)
    task = data.get("task", "e2e")
    for (section, key), value in LEGACY_VALUES.items():
        tasks = LEGACY_TASKS.get((section, key))
        if isinstance(data.get(section, {}), dict) and (tasks is None or task in tasks):
            data.setdefault(section, {}).setdefault(key, value)
    return data


SECTIONS = {"model": ModelArgs, "data": DataArgs, "optim": OptimArgs, "decode": DecodeArgs, "run": RunArgs}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(sorted(choices))})"


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key, names)}")
        if key in SECTIONS and cls is Recipe:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key}: expected a mapping of {SECTIONS[key].__name__} fields")
            kwargs[key] = _build(SECTIONS[key], value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


def recipe_from_dict(data: dict[str, Any], source: str = "recipe") -> Recipe:
    """A checked Recipe: known keys, right types, and values in range (before any data or weights load)."""
    recipe = _build(Recipe, data or {}, source)
    check_values(recipe, source)
    return recipe


# (section, field, lowest allowed value, what it counts); None (where allowed) is always accepted
_AT_LEAST: tuple[tuple[str, str, float, str], ...] = (
    ("optim", "batch_size", 1, "examples per step"),
    ("optim", "grad_accum", 1, "micro-batches per optimizer step"),
    ("optim", "max_steps", 1, "optimizer steps; leave it out to train for optim.epochs"),
    ("optim", "warmup_steps", 0, "warm-up steps"),
    ("data", "max_length", 1, "tokens"),
    ("data", "train_limit", 1, "training examples; leave it out for all"),
    ("data", "eval_limit", 1, "evaluation inputs; leave it out for all"),
    ("data", "dev_limit", 1, "dev examples; leave it out for all"),
    ("data", "pack_per_row", 1, "examples per row; 1 = no packing"),
    ("decode", "num_beams", 1, "beams; 1 = greedy"),
    ("decode", "max_new_tokens", 1, "generated tokens"),
    ("decode", "batch_size", 1, "inputs decoded together"),
    ("decode", "no_repeat_ngram_size", 0, "n-gram size; 0 = off"),
    ("run", "eval_every", 1, "optimizer steps; leave it out for once per epoch"),
    ("run", "log_every", 1, "optimizer steps"),
    ("run", "checkpoint_every", 1, "optimizer steps; leave it out to checkpoint at each evaluation"),
)


def check_values(recipe: Recipe, source: str = "recipe") -> None:
    """Every numeric field in its range; ConfigError naming ``source.section.field``, the value and the range."""
    for section, name, low, what in _AT_LEAST:
        value = getattr(getattr(recipe, section), name)
        if value is not None and value < low:
            raise ConfigError(f"{source}.{section}.{name}: must be >= {low:g} ({what}), got {value!r}")
    optim = recipe.optim
    checks = [
        ("optim.lr", optim.lr, math.isfinite(optim.lr) and optim.lr > 0, "a finite number > 0"),
        ("optim.epochs", optim.epochs, math.isfinite(optim.epochs) and optim.epochs > 0, "a finite number > 0"),
        ("optim.weight_decay", optim.weight_decay, math.isfinite(optim.weight_decay) and optim.weight_decay >= 0,
         "a finite number >= 0"),
        ("optim.label_smoothing", optim.label_smoothing, 0.0 <= optim.label_smoothing < 1.0, "in [0, 1)"),
        ("optim.betas", optim.betas, all(0.0 <= b < 1.0 for b in optim.betas), "two numbers in [0, 1)"),
        ("optim.clip_grad_norm", optim.clip_grad_norm,
         optim.clip_grad_norm is None or (math.isfinite(optim.clip_grad_norm) and optim.clip_grad_norm > 0),
         "a finite number > 0, or null for no clipping"),
        ("decode.length_penalty", recipe.decode.length_penalty, math.isfinite(recipe.decode.length_penalty),
         "a finite number"),
    ]
    for key, value, ok, expected in checks:
        if not ok:
            raise ConfigError(f"{source}.{key}: expected {expected}, got {value!r}")
    if recipe.task != "e2e" and recipe.data.pack_per_row != 1:
        raise ConfigError(f"{source}.data.pack_per_row: packing is for the causal-LM task (e2e); task "
                          f"{recipe.task!r} classifies each row, so it needs one example per row (1), got "
                          f"{recipe.data.pack_per_row!r}")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "method_args.r=8"]`` applied to a recipe dict (values parsed as YAML scalars)."""
    data = _plain(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
        key, raw = item.split("=", 1)
        try:
            value = _yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not a YAML scalar or list "
                              f"({str(err).splitlines()[0]})") from None
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def load_recipe_dict(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = _yaml_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a YAML mapping")
    return data


def recipe_help() -> str:
    """Every recipe key with its default and help text (from the dataclasses)."""
    lines = []
    for section, cls in [("", Recipe)] + list(SECTIONS.items()):
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if section == "" and f.name in SECTIONS:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            key = f"{section}.{f.name}" if section else f.name
            lines.append(f"  {key} = {default!r}\n      {docs.get(f.name, '')}")
    return "\n".join(lines)
