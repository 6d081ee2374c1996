"""Training throughput: HF peft's LoRA in a plain fp32 loop vs peftlab's training step, side by side.

Both train LoRA (r=4, alpha=32, q and v) on the offline SmolLM2-135M with the same E2E batches (batch 8,
dynamic padding). Rounds are interleaved (A, B, A, B, ...) so machine noise hits both; the summary reports the
median step time of each and their ratio. peftlab variants: fp32 full-logit loss (same math as HF), target-only
logits, and target-only logits under bf16 autocast (adapter weights stay fp32).

    .venv/bin/python benchmarks/bench_train.py [--steps 6] [--batch-size 8] [--out benchmarks/results/bench_train.json]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch


def load_batches(tokenizer, n_batches: int, batch_size: int, data_dir: str):
    from peftlab.data import linearize_mr, load_e2e
    from peftlab.train import collate_causal_lm

    records = load_e2e("train", data_dir).records[: n_batches * batch_size]
    pairs = [(linearize_mr(r.mr) + " ||", " " + r.ref) for r in records]
    return [collate_causal_lm(tokenizer, [p for p, _ in pairs[i:i + batch_size]],
                              [t for _, t in pairs[i:i + batch_size]]).as_model_inputs()
            for i in range(0, len(pairs), batch_size)]


def hf_peft_setup():
    import peft

    from peftlab.zoo import load_model

    model = peft.get_peft_model(load_model("smollm2-135m"),
                                peft.LoraConfig(r=4, lora_alpha=32, lora_dropout=0.1,
                                                target_modules=["q_proj", "v_proj"]))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)

    def step(batch):
        loss = model(**batch).loss  # full [batch, seq, vocab] logits
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def peftlab_setup(target_only: bool, bf16: bool):
    from peftlab import LoraConfig, get_peft_model
    from peftlab.train.tasks import TargetOnlyCausalLMLoss
    from peftlab.zoo import load_model

    model = get_peft_model(load_model("smollm2-135m"),
                           LoraConfig(r=4, lora_alpha=32, lora_dropout=0.1, target_modules=["q", "v"]))
    model.train()
    loss_module = TargetOnlyCausalLMLoss(model) if target_only else None
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)

    def step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_module(**batch) if target_only else model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (after 1 warm-up step)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-dir", default=os.environ.get("PEFTLAB_DATA_DIR", "../shared/data"))
    parser.add_argument("--out", default="benchmarks/results/bench_train.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    from peftlab.zoo import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    batches = load_batches(tokenizer, args.steps + 1, args.batch_size, args.data_dir)
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    variants = {
        "hf_peft_fp32": hf_peft_setup(),
        "peftlab_fp32_full_logits": peftlab_setup(target_only=False, bf16=False),
        "peftlab_fp32_target_logits": peftlab_setup(target_only=True, bf16=False),
        "peftlab_bf16_target_logits": peftlab_setup(target_only=True, bf16=True),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    losses: dict[str, list[float]] = {name: [] for name in variants}
    for i, batch in enumerate(batches):  # interleaved rounds; round 0 is warm-up
        for name, step in variants.items():
            start = time.perf_counter()
            losses[name].append(step(batch))
            if i > 0:
                times[name].append(time.perf_counter() - start)
    timed_tokens = sum(tokens[1:])
    base = statistics.median(times["hf_peft_fp32"])
    results = {"batch_size": args.batch_size, "steps": args.steps, "threads": torch.get_num_threads(),
               "tokens_per_step_mean": timed_tokens / args.steps, "variants": {}}
    print(f"{'variant':<30}{'median s/step':>15}{'tokens/s':>12}{'speed-up':>10}   first/last loss")
    for name in variants:
        med = statistics.median(times[name])
        tok_s = timed_tokens / sum(times[name])
        results["variants"][name] = {"median_step_seconds": med, "tokens_per_second": tok_s,
                                     "speedup_vs_hf_peft": base / med, "losses": losses[name]}
        print(f"{name:<30}{med:>15.2f}{tok_s:>12.1f}{base / med:>9.2f}x   {losses[name][0]:.3f}/{losses[name][-1]:.3f}")
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process (all variants loaded): {results['peak_rss_mb']:.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
