"""`peftlab demo`: the main job. A small real LoRA fine-tune of the offline SmolLM2-135M on E2E examples.

Loads the pretrained model, attaches LoRA (the LoRA paper's E2E setup: r=4, alpha=32, q and v), prints the
trainable-parameter table, measures the held-out loss, trains a few steps on E2E training examples, measures the
loss again, decodes a few test meaning representations greedily, and saves the adapter.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="zoo name, local folder or hub id")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding e2e/ (default: $PEFTLAB_DATA_DIR)")
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (constant)")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank r")
    parser.add_argument("--alpha", type=float, default=32.0, help="LoRA alpha")
    parser.add_argument("--eval-examples", type=int, default=32, help="dev examples for the held-out loss")
    parser.add_argument("--decode", type=int, default=3, help="test MRs to decode greedily after training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs/demo", help="where the adapter and metrics.json go")


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="main job: short real LoRA fine-tune of SmolLM2-135M on E2E",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=run_demo)


def _mean_loss(model, batches) -> float:
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            n = batch.n_target_tokens
            total += model(**batch.as_model_inputs()).loss.item() * n
            tokens += n
    return total / tokens


def run_demo(args: argparse.Namespace) -> int:
    from .data import linearize_mr, load_e2e
    from .model import get_peft_model
    from .train import collate_causal_lm
    from .tuners.lora import LoraConfig
    from .zoo import load_model, load_tokenizer

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    output_dir = Path(args.output_dir)
    started = time.perf_counter()

    print(f"[demo] loading {args.model}")
    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, task="causal-lm", dtype=torch.float32)

    train = load_e2e("train", args.data_dir)
    dev = load_e2e("dev", args.data_dir)
    test = load_e2e("test", args.data_dir)
    rng = random.Random(args.seed)
    # prompt "<linearized MR> ||", target " <reference>" + eos (the LoRA repo's E2E format)
    train_pairs = [(linearize_mr(r.mr) + " ||", " " + r.ref) for r in train.records]
    rng.shuffle(train_pairs)
    eval_pairs = [(linearize_mr(r.mr) + " ||", " " + r.ref) for r in dev.records][: args.eval_examples]
    print(f"[demo] E2E: {len(train_pairs):,d} train pairs, {len(eval_pairs)} dev pairs for the loss")

    def batches_of(pairs):
        for i in range(0, len(pairs), args.batch_size):
            chunk = pairs[i:i + args.batch_size]
            yield collate_causal_lm(tokenizer, [p for p, _ in chunk], [t for _, t in chunk])

    eval_batches = list(batches_of(eval_pairs))
    config = LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.1, target_modules=["q", "v"],
                        task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    print(model.adapter_summary())
    model.print_trainable_parameters()

    loss_before = _mean_loss(model, eval_batches)
    print(f"[demo] held-out loss before: {loss_before:.4f} (perplexity {math.exp(loss_before):.1f})")

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                  weight_decay=0.01)
    train_iter = batches_of(train_pairs)
    model.train()
    losses, tokens, t0 = [], 0, time.perf_counter()
    progress = tqdm(range(args.steps), desc="train", unit="step")
    for _ in progress:
        batch = next(train_iter)
        loss = model(**batch.as_model_inputs()).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += int(batch.attention_mask.sum())
        progress.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")
    train_seconds = time.perf_counter() - t0

    loss_after = _mean_loss(model, eval_batches)
    print(f"[demo] held-out loss after {args.steps} steps: {loss_after:.4f} (perplexity {math.exp(loss_after):.1f})"
          f"  [before {loss_before:.4f}]")

    if args.decode:
        print("[demo] greedy decoding of test MRs:")
        mrs = [instance.mr for instance in test.instances[: args.decode]]
        tokenizer.padding_side = "left"
        prompts = [linearize_mr(mr) + " ||" for mr in mrs]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=40, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        for mr, seq in zip(mrs, out[:, enc["input_ids"].shape[1]:]):
            text = tokenizer.decode(seq, skip_special_tokens=True).split("\n")[0].strip()
            print(f"  MR:  {mr}\n  OUT: {text}")

    model.save_pretrained(output_dir / "adapter")
    metrics = {"loss_before": loss_before, "loss_after": loss_after, "train_losses": losses,
               "steps": args.steps, "batch_size": args.batch_size, "train_seconds": train_seconds,
               "train_tokens_per_second": tokens / train_seconds,
               "trainable_parameters": model.get_nb_trainable_parameters()[0],
               "total_seconds": time.perf_counter() - started}
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"[demo] adapter saved to {output_dir / 'adapter'}; metrics in {output_dir / 'metrics.json'}")
    return 0
