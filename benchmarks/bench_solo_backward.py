"""Solo Connection backward cost: training-step time vs forward time, Solo (top blocks only) vs LoRA on all layers.

Nothing below a Solo adapter's lowest destination block depends on a trainable parameter, so autograd records no
graph there and backward stops at that block; LoRA on every layer back-propagates through all of them. This script
measures it and also counts, per config, how many blocks took part in backward (blocks whose output requires grad).

    .venv/bin/python benchmarks/bench_solo_backward.py                 # zoo smollm2-135m if installed, else a
                                                                       # random model of SmolLM2-135M's shape
    .venv/bin/python benchmarks/bench_solo_backward.py --model tiny --reps 3 --out /tmp/solo.json

Timing depends on the architecture's shape, not on the weights, so the random SmolLM2-shaped model gives the same
picture as the real one. Results are printed and written as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from peftlab import LoraConfig, PeftConfig, SoloConnectionConfig, get_layout, get_peft_model
from peftlab.tuners.solo import SoloBlock, attach_homotopy_schedule

# SmolLM2-135M's architecture (config.json of HuggingFaceTB/SmolLM2-135M): 30 blocks, d=576, GQA 9/3 heads
SMOLLM2_SHAPE = dict(num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                     intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                     tie_word_embeddings=True, rms_norm_eps=1e-5)
TINY_SHAPE = dict(num_hidden_layers=8, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, vocab_size=512, max_position_embeddings=512)


def load_base(kind: str) -> tuple[nn.Module, str]:
    from transformers import LlamaConfig, LlamaForCausalLM

    if kind in ("auto", "smollm2-135m"):
        try:
            from peftlab.zoo.api import list_models, load_model

            installed = any(m.name == "smollm2-135m" and m.installed for m in list_models())
        except Exception:  # the zoo is optional here
            installed = False
        if installed:
            return load_model("smollm2-135m"), "smollm2-135m (zoo, pretrained)"
        if kind == "smollm2-135m":
            sys.exit("smollm2-135m is not installed: `peftlab zoo install smollm2-135m`, or use --model auto")
    torch.manual_seed(0)
    shape = TINY_SHAPE if kind == "tiny" else SMOLLM2_SHAPE
    name = "tiny random llama" if kind == "tiny" else "random llama with SmolLM2-135M's shape"
    return LlamaForCausalLM(LlamaConfig(**shape)), name


def configs(n_blocks: int) -> dict[str, PeftConfig]:
    L = n_blocks
    return {
        "lora-qv-all-layers-r8": LoraConfig(r=8, lora_alpha=16, target_modules=["q", "v"]),
        "solo-top-blocks-r8": SoloConnectionConfig(topology=[[L - 4, L - 2], [L - 3, L - 1], [L - 4, L - 1]], rank=8),
        "solo-emb-to-last-r8": SoloConnectionConfig(topology="single", include_embeddings=True, rank=8),
        "solo-span-default-r8": SoloConnectionConfig(),  # span-(L//3) from block 0: backward from block L//3 up
    }


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def blocks_in_backward(model: nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Blocks whose output requires grad in a training forward (those are the blocks backward runs through)."""
    flags: list[bool] = []
    handles = []
    for block in get_layout(model).blocks():
        inner = block.base_layer if isinstance(block, SoloBlock) else block
        handles.append(inner.register_forward_hook(
            lambda m, a, o: flags.append(bool((o[0] if isinstance(o, tuple) else o).requires_grad))))
    model(**batch)
    for handle in handles:
        handle.remove()
    return sum(flags)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every config is an adapter of one PeftModel; rounds interleave them, and the minimum over rounds is kept
    (robust when other processes share the CPU). Blocks in backward are counted once per config (deterministic)."""
    torch.set_num_threads(args.threads)
    base, model_name = load_base(args.model)
    layout = get_layout(base)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, base.config.vocab_size, (args.batch, args.seq), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    all_configs = configs(layout.n_blocks)  # LoRA first: its layout paths must be resolved before blocks are wrapped
    model = None
    for name, config in all_configs.items():
        if model is None:
            model = get_peft_model(base, config, adapter_name=name)
        else:
            model.add_adapter(name, config)
    assert model is not None
    model.train()
    optims, trainable = {}, {}
    for name, config in all_configs.items():
        params = list(model.adapter_parameters(name).values())
        trainable[name] = sum(p.numel() for p in params if p.requires_grad)
        optims[name] = torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-4)
        if isinstance(config, SoloConnectionConfig):
            attach_homotopy_schedule(optims[name], model, adapter_name=name)

    def base_forward() -> None:
        with model.disable_adapter(), torch.no_grad():
            model(**batch)

    def forward() -> None:
        model(**batch).loss.detach()

    def step(name: str) -> Callable[[], None]:
        def run_step() -> None:
            optims[name].zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            optims[name].step()
        return run_step

    samples: dict[str, dict[str, list[tuple[float, float]]]] = {n: {"forward": [], "step": []} for n in all_configs}
    base_samples: list[tuple[float, float]] = []
    for round_ in range(args.warmup + args.reps):
        keep = round_ >= args.warmup
        timing = timed(base_forward)
        if keep:
            base_samples.append(timing)
        for name in all_configs:
            model.set_adapter(name)
            fwd, stp = timed(forward), timed(step(name))
            if keep:
                samples[name]["forward"].append(fwd)
                samples[name]["step"].append(stp)

    def best(values: list[tuple[float, float]]) -> dict[str, float]:
        return {"wall_ms": min(v[0] for v in values), "cpu_ms": min(v[1] for v in values),
                "wall_ms_median": statistics.median(v[0] for v in values)}

    report: dict[str, Any] = {
        "model": model_name, "n_blocks": layout.n_blocks, "hidden_size": layout.shape.hidden_size,
        "batch": args.batch, "seq": args.seq, "reps": args.reps, "threads": args.threads,
        "torch": torch.__version__, "platform": platform.platform(),
        "statistic": "minimum over interleaved rounds (wall and process CPU time); median wall also given",
        "base_forward_no_grad": best(base_samples), "results": [],
    }
    print(f"{model_name}: {layout.n_blocks} blocks, d={layout.shape.hidden_size}, batch {args.batch}x{args.seq}, "
          f"{args.threads} threads, min of {args.reps} interleaved rounds")
    print(f"base forward (no grad): {report['base_forward_no_grad']['wall_ms']:.0f} ms wall, "
          f"{report['base_forward_no_grad']['cpu_ms']:.0f} ms cpu")
    print(f"{'config':24s} {'trainable':>9s} {'fwd ms':>7s} {'step ms':>8s} {'step/fwd':>8s} "
          f"{'cpu fwd':>8s} {'cpu step':>8s} {'cpu s/f':>7s} {'blocks in bwd':>13s}")
    for name in all_configs:
        model.set_adapter(name)
        fwd, stp = best(samples[name]["forward"]), best(samples[name]["step"])
        row = {"config": name, "trainable_params": trainable[name], "forward": fwd, "step": stp,
               "step_over_forward_wall": stp["wall_ms"] / fwd["wall_ms"],
               "step_over_forward_cpu": stp["cpu_ms"] / fwd["cpu_ms"],
               "blocks_in_backward": blocks_in_backward(model.model, batch)}
        report["results"].append(row)
        print(f"{name:24s} {row['trainable_params']:>9,d} {fwd['wall_ms']:7.0f} {stp['wall_ms']:8.0f} "
              f"{row['step_over_forward_wall']:8.2f} {fwd['cpu_ms']:8.0f} {stp['cpu_ms']:8.0f} "
              f"{row['step_over_forward_cpu']:7.2f} {row['blocks_in_backward']:>6d} / {layout.n_blocks}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("auto", "smollm2-135m", "random-smollm2", "tiny"), default="auto")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5, help="measured rounds (each times every config once)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds run before measuring")
    parser.add_argument("--threads", type=int, default=min(2, torch.get_num_threads()))
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "bench_solo_backward.json")
    args = parser.parse_args(argv)
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
