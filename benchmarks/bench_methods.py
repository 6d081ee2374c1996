"""Every method's training step against its model's forward, side by side in one run, with HF peft as peers.

For each model (the offline SmolLM2-135M and a GPT-2-small-shaped model with random weights by default; a
GPT-2-medium-shaped one on request, the shape of the papers' E2E runs) every variant trains on
the same E2E batches (batch 8, about 450 real tokens) in peftlab's fast path: bf16 autocast, bf16 frozen base
weights, fp32 trainable tensors, eager attention (peftlab's CPU default); with ``--dtype float32`` (or ``auto`` on a
CPU that only emulates bf16) everything in fp32. Rounds are interleaved (base forward,
variant A, variant B, ... then again), so machine noise hits all of them alike. Reported per variant, medians:

- ``step_s``: one optimizer step (forward, backward, AdamW);
- ``forward_s``: the same model's forward under ``no_grad``, adapter included;
- ``step_vs_base_forward``: ``step_s`` over the *base* model's forward (no adapter, same loss code). A PEFT step
  whose gradients reach the first block costs about 2x the forward (the backward to the activations is about one
  forward more); ``full`` also computes every weight gradient and so costs about 3x;
- ``step_vs_lora``: ``step_s`` over peftlab LoRA's ``step_s`` on the same model.

peftlab variants use peftlab's target-only loss (logits only where labels are); the HF peft peers (``hf-lora``,
``hf-prefix``, ``hf-ia3``, peft 0.21) use the model's own loss, as a peft user's loop does, and are compared with
the base forward of that same loss (``base_forward_full_logits_s``). ``+compile`` variants compile every block
(``run.compile``); ``+fused`` variants step AdamW with its fused kernel (``optim.fused``, ``peftlab train``'s
default) instead of the per-tensor loop the others use; the base model's dropout layers use peftlab's cheaper CPU
masks, as ``peftlab train`` does (``model.fast_dropout``), except in ``+torch-dropout`` variants, which keep
transformers' ``nn.Dropout``; a variant that cannot run (for example compile for a method that does not support it) is kept in
the table as failed, with the error.

    .venv/bin/python benchmarks/bench_methods.py [--models smollm2-135m gpt2-small-random] [--variants lora solo ...]
        [--steps 5] [--warmup 2] [--dtype auto] [--out benchmarks/results/bench_methods.json]

On a machine with a GPU (no pretrained weights needed): ``--device cuda --dtype bfloat16 --models gpt2-medium-random``
times every method there, CUDA synchronised around each step, with the run's peak CUDA memory.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

MODELS = ("smollm2-135m", "gpt2-small-random", "gpt2-medium-random")
GPT2_SHAPES = {"gpt2-small-random": dict(n_layer=12, n_embd=768, n_head=12),  # GPT-2 small's shape
               "gpt2-medium-random": dict(n_layer=24, n_embd=1024, n_head=16)}  # GPT-2 M, the papers' E2E model
GPT2_VOCAB = 50257
DEVICE = torch.device("cpu")  # --device; every model, batch and autocast of the run
SUITE_ARGS: dict[str, tuple[str, dict[str, Any]]] = {  # variant -> (method, method_args on top of the recipe's)
    "lora": ("lora", {}),
    "prefix": ("prefix", {}),
    "gated-prefix": ("gated-prefix", {}),
    "solo": ("solo", {}),
    "solo-upper": ("solo", {"topology": "upper-half"}),  # resolved per model below
    "kernel-mix": ("kernel-mix", {"r_q": 1, "r_v": 2, "s_q": 0, "s_v": 0, "r_o": 0, "s_o": 0, "dropout": 0.1,
                                  "init_scheme": "houlsby"}),
    "houlsby": ("houlsby", {"bottleneck_size": 2}),
    "bitfit": ("bitfit", {}),
    "full": ("full", {}),
}
PEERS = ("hf-lora", "hf-prefix", "hf-ia3")
COMPILED = tuple(f"{name}+compile" for name in ("lora", "solo", "kernel-mix", "prefix", "gated-prefix"))
FUSED = tuple(f"{name}+fused" for name in SUITE_ARGS)  # AdamW's fused kernel (optim.fused) instead of its loop
TORCH_DROPOUT = tuple(f"{name}+torch-dropout" for name in SUITE_ARGS)  # the base model's nn.Dropout left as built
VARIANTS = (*SUITE_ARGS, *COMPILED, *FUSED, *TORCH_DROPOUT, *PEERS)
DEFAULT_VARIANTS = (*SUITE_ARGS, "lora+compile", "prefix+compile", *PEERS)


def unknown(kind: str, given: list[str], valid: tuple[str, ...]) -> str | None:
    bad = [g for g in given if g not in valid]
    return f"unknown {kind} {', '.join(bad)}; valid: {', '.join(valid)}" if bad else None


# --- models and data ---------------------------------------------------------------------------------------------
def load_base(model_name: str, dtype: torch.dtype):
    """A fresh base model (bf16 weights) and its tokenizer."""
    if model_name == "smollm2-135m":
        from peftlab.zoo import load_model, load_tokenizer

        model = load_model("smollm2-135m", dtype=dtype, attn_implementation="eager")
        return model.to(DEVICE), load_tokenizer("smollm2-135m")
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_gpt2_tokenizer(Path(os.environ.get("PEFTLAB_DATA_DIR", "../shared/data")))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(attn_implementation="eager", **GPT2_SHAPES[model_name]))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device=DEVICE, dtype=dtype), tokenizer


def load_gpt2_tokenizer(data_dir: Path):
    """GPT-2's BPE tokenizer from ``<data_dir>/gpt2-tokenizer`` (vocab.json + merges.txt), eos as padding."""
    from transformers import GPT2TokenizerFast

    # from_pretrained on the folder: transformers 5's keyword constructor (vocab_file=, merges_file=) silently builds
    # an empty vocabulary, and every example then tokenizes to nothing but its eos (gpt2-tokenizer/SOURCE.md). The
    # GPT-2-shaped rows measured before 2026-12-07 (evening) ran on such one-token examples.
    tokenizer = GPT2TokenizerFast.from_pretrained(str(data_dir / "gpt2-tokenizer"))
    if len(tokenizer) != GPT2_VOCAB:
        raise RuntimeError(f"the GPT-2 tokenizer in {data_dir / 'gpt2-tokenizer'} has {len(tokenizer)} tokens, "
                           f"not {GPT2_VOCAB}")
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_batches(tokenizer, n_batches: int, batch_size: int, data_dir: str) -> list[dict[str, torch.Tensor]]:
    from peftlab.data import linearize_mr, load_e2e
    from peftlab.train import collate_causal_lm

    records = load_e2e("train", data_dir).records[: n_batches * batch_size]
    pairs = [(linearize_mr(r.mr) + " ||", " " + r.ref) for r in records]
    batches = [collate_causal_lm(tokenizer, [p for p, _ in pairs[i:i + batch_size]],
                                 [t for _, t in pairs[i:i + batch_size]]).as_model_inputs()
               for i in range(0, len(pairs), batch_size)]
    return [{k: v.to(DEVICE) for k, v in batch.items()} for batch in batches]


# --- variants ----------------------------------------------------------------------------------------------------
@dataclass
class Loop:
    """One variant's step and forward on a batch, and what it trains."""

    step: Callable[[dict], float]
    forward: Callable[[dict], float]
    trainable: int
    error: str | None = None
    times: dict[str, list[float]] = field(default_factory=lambda: {"step": [], "forward": []})


def _method_args(variant: str, model) -> tuple[str, dict[str, Any]]:
    from peftlab.train.cli import find_recipe
    from peftlab.train.recipe import load_recipe_dict

    method, extra = SUITE_ARGS[variant.split("+")[0]]
    recipe = find_recipe("e2e", "smollm2-135m", method)
    args = dict(load_recipe_dict(recipe).get("method_args") or {}) if recipe else {}
    args.update(extra)
    if args.get("topology") == "upper-half":  # span-k pairs whose lowest source is in the upper half
        from peftlab.tuners.solo import SoloConnectionConfig

        n_blocks = model.config.num_hidden_layers
        pairs = SoloConnectionConfig(topology="span").resolve_pairs(n_blocks)
        args["topology"] = [[i, j] for i, j in pairs if i >= n_blocks // 2]
    return method, args


def peftlab_loop(variant: str, model, dtype: torch.dtype) -> Loop:
    from peftlab import get_peft_model
    from peftlab.train.methods import build_method_config
    from peftlab.train.speed import cast_frozen_weights, compile_blocks, fast_base_dropout
    from peftlab.train.tasks import TargetOnlyCausalLMLoss

    method, args = _method_args(variant, model)
    if "torch-dropout" not in variant.split("+")[1:]:
        fast_base_dropout(model)  # as `peftlab train` does (model.fast_dropout)
    peft_model = get_peft_model(model, build_method_config(method, args, "CAUSAL_LM"))
    if dtype != torch.float32:
        cast_frozen_weights(peft_model, dtype)
    for name in peft_model.peft_config:  # e.g. Solo's ramp: t = 1 from the first step, as late in a run
        peft_model._tuner(name).on_train_begin(peft_model, name, 10, 0)
    if "compile" in variant.split("+")[1:]:
        compile_blocks(peft_model)
    loss_module = TargetOnlyCausalLMLoss(peft_model)
    return _loop(peft_model, loss_module, lambda batch: loss_module(**batch), dtype,
                 fused="fused" in variant.split("+")[1:])


def peer_loop(variant: str, model, dtype: torch.dtype) -> Loop:
    import peft

    if variant == "hf-lora":
        config = peft.LoraConfig(r=4, lora_alpha=32, lora_dropout=0.1, target_modules=_peer_targets(model, "qv"))
    elif variant == "hf-prefix":
        config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=10, prefix_projection=True,
                                         encoder_hidden_size=512)
    else:
        config = peft.IA3Config(task_type="CAUSAL_LM", target_modules=_peer_targets(model, "kvf"),
                                feedforward_modules=_peer_targets(model, "f"))
    peft_model = peft.get_peft_model(model, config)
    for param in peft_model.parameters():
        if param.requires_grad:
            param.data = param.data.float()  # fp32 trainable tensors, as peftlab's
    return _loop(peft_model, peft_model, lambda batch: peft_model(**batch).loss, dtype)


def _peer_targets(model, which: str) -> list[str]:
    llama = getattr(model.config, "model_type", "") != "gpt2"
    names = {"q": "q_proj" if llama else "c_attn", "v": "v_proj" if llama else "c_attn",
             "k": "k_proj" if llama else "c_attn", "f": "down_proj" if llama else "mlp.c_proj"}
    return sorted({names[c] for c in which})


def _loop(model, trained: torch.nn.Module, loss_of: Callable[[dict], torch.Tensor], dtype: torch.dtype,
          fused: bool = False) -> Loop:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused)
    autocast = dtype != torch.float32

    def step(batch: dict) -> float:
        trained.train()
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def forward(batch: dict) -> float:
        trained.eval()
        with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
            return loss_of(batch).item()

    return Loop(step, forward, sum(p.numel() for p in params))


def base_forwards(model, dtype: torch.dtype) -> tuple[Callable, Callable]:
    """The base model's forward with peftlab's target-only loss, and with the model's own (full-logits) loss."""
    from peftlab.train.tasks import TargetOnlyCausalLMLoss

    class _Holder:  # what TargetOnlyCausalLMLoss reads: ``.model``, the transformers model
        pass

    holder = _Holder()
    holder.model = model
    target_only = TargetOnlyCausalLMLoss(holder)
    model.eval()

    def run(loss_of):
        def forward(batch: dict) -> float:
            with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=dtype != torch.float32):
                return loss_of(batch).item()
        return forward

    return run(lambda b: target_only(**b)), run(lambda b: model(**b).loss)


# --- the run -----------------------------------------------------------------------------------------------------
def _timed(fn, batch) -> float:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(batch)  # returns loss.item(): the device has finished the step
    return time.perf_counter() - start


def bench_model(model_name: str, variants: list[str], steps: int, warmup: int, data_dir: str,
                dtype: torch.dtype = torch.bfloat16) -> dict[str, Any]:
    base, tokenizer = load_base(model_name, dtype)
    batches = load_batches(tokenizer, warmup + steps, 8, data_dir)
    forward_target, forward_full = base_forwards(base, dtype)
    loops: dict[str, Loop] = {}
    for variant in variants:
        print(f"[bench_methods] {model_name}: setting up {variant}", flush=True)
        model, _ = load_base(model_name, dtype)
        try:
            loops[variant] = (peer_loop if variant in PEERS else peftlab_loop)(variant, model, dtype)
        except Exception as err:  # reported as failed, not dropped
            loops[variant] = Loop(None, None, 0, error=f"{type(err).__name__}: {err}".splitlines()[0][:300])
            print(f"[bench_methods]   {variant} failed at set-up: {loops[variant].error}", flush=True)
    base_times: dict[str, list[float]] = {"target_only": [], "full_logits": []}
    for round_index, batch in enumerate(batches):
        timed = round_index >= warmup
        for key, fn in (("target_only", forward_target), ("full_logits", forward_full)):
            seconds = _timed(fn, batch)
            if timed:
                base_times[key].append(seconds)
        for variant, loop in loops.items():
            if loop.error:
                continue
            try:
                for kind in ("step", "forward"):
                    seconds = _timed(getattr(loop, kind), batch)
                    if timed:
                        loop.times[kind].append(seconds)
            except Exception as err:
                loop.error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                print(f"[bench_methods]   {variant} failed in round {round_index}: {loop.error}", flush=True)
                traceback.print_exc(limit=3)
        print(f"[bench_methods] {model_name}: round {round_index + 1}/{len(batches)} done", flush=True)
    base_target = statistics.median(base_times["target_only"])
    base_full = statistics.median(base_times["full_logits"])
    lora = loops.get("lora")
    lora_step = statistics.median(lora.times["step"]) if lora and not lora.error else None
    rows = {}
    for variant, loop in loops.items():
        if loop.error:
            rows[variant] = {"status": "failed", "error": loop.error}
            continue
        step, forward = statistics.median(loop.times["step"]), statistics.median(loop.times["forward"])
        reference = base_full if variant in PEERS else base_target
        rows[variant] = {"status": "ok", "trainable": loop.trainable, "step_s": step, "forward_s": forward,
                         "step_vs_base_forward": step / reference, "forward_vs_base_forward": forward / reference,
                         "step_vs_lora": step / lora_step if lora_step else None,
                         "loss": "model's own (full logits)" if variant in PEERS else "target-only"}
    return {"base_forward_target_only_s": base_target, "base_forward_full_logits_s": base_full,
            "tokens_per_batch_mean": statistics.mean(int(b["attention_mask"].sum()) for b in batches),
            "variants": rows}


def print_table(model_name: str, result: dict[str, Any]) -> None:
    print(f"\n{model_name}: base forward {result['base_forward_target_only_s']:.3f} s (target-only loss), "
          f"{result['base_forward_full_logits_s']:.3f} s (full logits)")
    print(f"{'variant':22s} {'trainable':>11s} {'step s':>8s} {'fwd s':>7s} {'step/base fwd':>14s} {'vs LoRA':>8s}")
    for variant, row in result["variants"].items():
        if row["status"] != "ok":
            print(f"{variant:22s} FAILED: {row['error']}")
            continue
        vs_lora = f"{row['step_vs_lora']:.2f}x" if row["step_vs_lora"] else "-"
        print(f"{variant:22s} {row['trainable']:>11,d} {row['step_s']:8.3f} {row['forward_s']:7.3f} "
              f"{row['step_vs_base_forward']:13.2f}x {vs_lora:>8s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS[:2]), help=f"any of: {', '.join(MODELS)}")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), help=f"any of: {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=5, help="timed rounds (after the warm-up rounds)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (compilation happens here)")
    parser.add_argument("--data-dir", default=os.environ.get("PEFTLAB_DATA_DIR", "../shared/data"))
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a machine with a GPU (random-weight "
                                                         "models only travel there: gpt2-small/medium-random)")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="bfloat16: bf16 autocast and bf16 frozen weights (the fast path where the CPU multiplies "
                             "bf16 natively); float32: everything fp32; auto: the one run.bf16=auto picks here")
    parser.add_argument("--out", default="benchmarks/results/bench_methods.json")
    args = parser.parse_args(argv)
    for problem in (unknown("model", args.models, MODELS), unknown("variant", args.variants, VARIANTS)):
        if problem:
            parser.error(problem)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    os.environ.setdefault("PEFTLAB_DATA_DIR", args.data_dir)
    from peftlab.hardware import bf16_matmul_native, describe

    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(
        args.dtype, torch.bfloat16 if bf16_matmul_native(DEVICE) else torch.float32)
    print(f"[bench_methods] dtype {dtype}", flush=True)
    results = {name: bench_model(name, args.variants, args.steps, args.warmup, args.data_dir, dtype)
               for name in args.models}
    for name, result in results.items():
        print_table(name, result)
    out = {"command": " ".join(["benchmarks/bench_methods.py", *sys.argv[1:]]), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "steps": args.steps, "warmup": args.warmup, "dtype": str(dtype),
           "device": str(DEVICE), "peak_cuda_memory_mb": (torch.cuda.max_memory_allocated() / 2**20
                                                          if DEVICE.type == "cuda" else None),
           "hardware": describe(), "models": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
