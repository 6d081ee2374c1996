"""Training throughput: HF peft's LoRA in a plain fp32 loop vs peftlab's training step, side by side.

Every variant trains LoRA (r=4, alpha=32, dropout 0.1, q and v) on the offline SmolLM2-135M with the same E2E
batches (batch 8). Rounds are interleaved (A, B, C, ... A, B, C, ...) so machine noise hits all of them; the summary
reports each variant's median step time, its tokens/s (real tokens, padding excluded) and the ratio to the HF peft
loop with dynamic padding. Variants:

- ``hf_peft_fp32``: HF peft 0.21.2, fp32, the model's own loss (full [batch, seq, vocab] logits), dynamic padding;
- ``hf_peft_fp32_pad512`` (with ``--pad-to 512``): the same loop with every batch padded to 512 tokens, as a
  ``padding="max_length"`` tokenizer call or the LoRA repo's ``seq_len 512`` would do;
- ``peftlab_fp32``: fp32, target-only fused LM-head loss;
- ``peftlab_bf16``: bf16 autocast, fp32 base weights, eager attention;
- ``peftlab_bf16_bf16w``: bf16 autocast, bf16 frozen base weights (adapters stay fp32), eager attention;
- ``peftlab_bf16_bf16w_compiled``: the same with ``run.compile`` (torch.compile of every block);
- ``peftlab_bf16_bf16w_compiled_cppgemm``: the same, compiled with inductor's ``max_autotune`` and its C++ GEMM
  templates (``max_autotune_gemm_backends="CPP,ATEN"``: each product picks the faster of the two by timing);
- ``peftlab_bf16_bf16w_packed2`` / ``peftlab_bf16_bf16w_compiled_packed2``: ``--bf16`` (and ``--compile``) on the
  same examples packed two to a row (``data.pack_per_row=2``: each example attends only to itself, the same loss
  on ~27 % fewer positions than dynamic padding);
- ``peftlab_fp32_eager`` / ``peftlab_fp32_compiled`` / ``peftlab_fp32_compiled_packed2``: the fp32 path (eager
  attention, as ``peftlab train`` runs on a CPU), what ``run.bf16=auto`` takes where bf16 is only emulated (an AVX2
  CPU: peftlab.hardware), plain, compiled, and compiled + packed.

With ``--memory`` each variant then runs alone in a fresh process for a few steps and its peak RSS is recorded.
Unless ``--no-floor``, the matrix-product floor of every timed batch (``--floor-dtype``: bf16 where the CPU
multiplies bf16 natively, else fp32) is measured in the same process after the
rounds (:func:`matmul_floor`: the products a LoRA step cannot avoid, each timed alone), and every variant's step is
reported over it (``step_over_floor``: the median over the timed batches of step time / that batch's floor). The
floor is taken of each layout the variants ran (padded, and packed where a packed variant ran): a packed variant is
reported over its own layout's floor (``step_over_floor``) and over the padded one (``step_over_padded_floor``).

    .venv/bin/python benchmarks/bench_train.py [--steps 8] [--warmup 2] [--pad-to 512] [--memory]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from peftlab.train.rundir import peak_memory_mb

LORA = dict(r=4, lora_alpha=32, lora_dropout=0.1)


def load_batches(tokenizer, n_batches: int, batch_size: int, data_dir: str, pad_to: int | None = None,
                 pack_per_row: int = 1):
    from peftlab.data import linearize_mr, load_e2e
    from peftlab.train import collate_causal_lm

    records = load_e2e("train", data_dir).records[: n_batches * batch_size]
    pairs = [(linearize_mr(r.mr) + " ||", " " + r.ref) for r in records]
    batches = [collate_causal_lm(tokenizer, [p for p, _ in pairs[i:i + batch_size]],
                                 [t for _, t in pairs[i:i + batch_size]], pack_per_row=pack_per_row).as_model_inputs()
               for i in range(0, len(pairs), batch_size)]
    return [_pad(b, pad_to, tokenizer.pad_token_id) for b in batches] if pad_to else batches


def _pad(batch: dict[str, torch.Tensor], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    extra = width - batch["input_ids"].shape[1]
    fill = {"input_ids": pad_id, "attention_mask": 0, "labels": -100}
    return {k: torch.nn.functional.pad(v, (0, extra), value=fill[k]) for k, v in batch.items()}


def hf_peft_setup():
    import peft

    from peftlab.zoo import load_model

    model = peft.get_peft_model(load_model("smollm2-135m"),
                                peft.LoraConfig(**LORA, target_modules=["q_proj", "v_proj"]))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)

    def step(batch):
        loss = model(**batch).loss  # full [batch, seq, vocab] logits
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def peftlab_setup(bf16: bool, base_dtype: str = "float32", attn: str = "sdpa", compile_blocks: bool = False,
                  inductor: dict | None = None, fp32_gemm: bool = False, weight_copies: bool = False,
                  fp32_gemm_implementation: str = "auto"):
    from peftlab import LoraConfig, get_peft_model
    from peftlab.train.speed import compile_blocks as compile_model_blocks
    from peftlab.train.tasks import TargetOnlyCausalLMLoss
    from peftlab.zoo import load_model

    model = get_peft_model(load_model("smollm2-135m", dtype=base_dtype, attn_implementation=attn),
                           LoraConfig(**LORA, target_modules=["q", "v"]))
    if compile_blocks:
        compile_model_blocks(model)
    model.train()
    loss_module = TargetOnlyCausalLMLoss(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)

    from peftlab.train.bf16_gemm import FrozenFp32Copies, fp32_matmuls_for_bf16

    # the frozen bf16 weights read from fp32 copies instead of upcast at every product (as `peftlab train` does)
    copies = FrozenFp32Copies(p for p in model.parameters() if not p.requires_grad) if weight_copies else None

    def step(batch):
        # bf16 products through fp32 kernels (peftlab.train.bf16_gemm)
        with fp32_matmuls_for_bf16(fp32_gemm, copies, fp32_gemm_implementation):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = loss_module(**batch)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    if inductor:  # inductor options for this variant only: its graphs compile (lazily) inside the patch
        from torch._inductor import config as inductor_config

        plain_step = step

        def step(batch):
            with inductor_config.patch(inductor):
                return plain_step(batch)

    return step


VARIANTS = {
    "hf_peft_fp32": (hf_peft_setup, {}),
    "hf_peft_fp32_pad512": (hf_peft_setup, {}),  # same loop; its batches are padded (see main)
    "peftlab_fp32": (peftlab_setup, dict(bf16=False)),
    "peftlab_bf16": (peftlab_setup, dict(bf16=True, attn="eager")),
    "peftlab_bf16_bf16w": (peftlab_setup, dict(bf16=True, base_dtype="bfloat16", attn="eager")),
    "peftlab_bf16_bf16w_compiled": (peftlab_setup, dict(bf16=True, base_dtype="bfloat16", attn="eager",
                                                        compile_blocks=True)),
    # inductor's C++ GEMM templates (AVX-512 / AMX micro-kernels) instead of oneDNN for the blocks' products
    "peftlab_bf16_bf16w_compiled_cppgemm": (peftlab_setup, dict(
        bf16=True, base_dtype="bfloat16", attn="eager", compile_blocks=True,
        inductor={"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"})),
    "peftlab_bf16_bf16w_packed2": (peftlab_setup, dict(bf16=True, base_dtype="bfloat16", attn="eager")),
    "peftlab_bf16_bf16w_compiled_packed2": (peftlab_setup, dict(bf16=True, base_dtype="bfloat16", attn="eager",
                                                                compile_blocks=True)),
    # bf16 (autocast, bf16 frozen weights) with every bf16 matrix product computed by an fp32 kernel and rounded to
    # bf16 once (peftlab.train.bf16_gemm), each frozen weight upcast at every product
    "peftlab_bf16_bf16w_fp32gemm": (peftlab_setup, dict(bf16=True, base_dtype="bfloat16", attn="eager",
                                                        fp32_gemm=True)),
    # the same with the frozen weights' fp32 copies (FrozenFp32Copies): what `peftlab train --bf16` runs on a CPU
    # that only emulates bf16
    "peftlab_bf16_bf16w_fp32gemm_copies": (peftlab_setup, dict(bf16=True, base_dtype="bfloat16", attn="eager",
                                                               fp32_gemm=True, weight_copies=True)),
    # the same through a TorchDispatchMode (a Python call for every op, not only the products): what that path
    # cost before the products' CPU kernels were replaced instead (2026-12-07)
    "peftlab_bf16_bf16w_fp32gemm_copies_mode": (peftlab_setup, dict(
        bf16=True, base_dtype="bfloat16", attn="eager", fp32_gemm=True, weight_copies=True,
        fp32_gemm_implementation="mode")),
    # the fp32 path `peftlab train` takes where bf16 is only emulated (run.bf16=auto on an AVX2 CPU)
    "peftlab_fp32_eager": (peftlab_setup, dict(bf16=False, attn="eager")),
    "peftlab_fp32_compiled": (peftlab_setup, dict(bf16=False, attn="eager", compile_blocks=True)),
    "peftlab_fp32_compiled_packed2": (peftlab_setup, dict(bf16=False, attn="eager", compile_blocks=True)),
}
PACKED_SUFFIX = "_packed2"  # variants that run the packed batches (two examples to a row)


def layout(name: str) -> str:
    """Which batches a variant runs: "pad512", "packed" or "padded" (dynamic padding)."""
    return "pad512" if name.endswith("pad512") else "packed" if name.endswith(PACKED_SUFFIX) else "padded"


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (first-call packing and allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_floor(batches, repeats: int = 5, dtype: torch.dtype = torch.bfloat16) -> dict:
    """The matrix-product floor of a LoRA step on each batch, in ``dtype`` (bf16 by default): the time of the
    products any implementation of the step must run, each timed alone here (same process, same threads), summed.

    Per decoder block, on the N = batch x width tokens the step computes: every frozen linear layer forward
    (``F.linear`` with the (out, in) weight) and its input gradient (``grad @ W``; not in the first block's q/k/v,
    whose input needs none), and the attention products (Q K^T and P V forward, four of that size backward, on
    the full width). The LM head forward and input gradient on the target tokens only. Not counted, so the floor
    is a lower bound: the adapters' own products (r = 4), norms, activations, softmax, the optimizer."""
    import torch.nn.functional as F

    from peftlab.zoo import load_model

    model = load_model("smollm2-135m", dtype="bfloat16")  # shapes only
    head = model.get_output_embeddings()
    config = model.config
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    linears = [(name, m.in_features, m.out_features) for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and m is not head]
    first_block = linears[0][0].rsplit(".", 2)[0]  # e.g. model.layers.0.self_attn
    params = sum(i * o for _, i, o in linears)
    floors, flops_per_step = [], []
    cache: dict[tuple, float] = {}

    def timed(kind: str, m: int, k: int, n: int) -> float:
        key = (kind, m, k, n)
        if key not in cache:
            if kind == "linear":  # (m, k) x (n, k)^T
                x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
                cache[key] = _median_seconds(lambda: F.linear(x, w), repeats)
            elif kind == "grad":  # (m, n) x (n, k): the input gradient of that linear layer
                g, w = torch.randn(m, n, dtype=dtype), torch.randn(n, k, dtype=dtype)
                cache[key] = _median_seconds(lambda: g @ w, repeats)
            else:  # batched (m = batch * heads, k, n): attention products
                b, rows, inner, cols = m, k, n, k
                a = torch.randn(b, rows, inner, dtype=dtype)
                c = torch.randn(b, inner, cols, dtype=dtype)
                cache[key] = _median_seconds(lambda: torch.bmm(a, c), repeats)
        return cache[key]

    for batch in batches:
        size, width = batch["input_ids"].shape  # rows x width: padded, or packed (several examples to a row)
        tokens = size * width
        targets = int((batch["labels"][:, 1:] != -100).sum())
        seconds = flops = 0.0
        for name, fan_in, fan_out in linears:
            seconds += timed("linear", tokens, fan_in, fan_out)
            flops += 2 * tokens * fan_in * fan_out
            if not name.startswith(first_block):
                seconds += timed("grad", tokens, fan_in, fan_out)
                flops += 2 * tokens * fan_in * fan_out
        seconds += timed("linear", targets, head.in_features, head.out_features)
        seconds += timed("grad", targets, head.in_features, head.out_features)
        flops += 4 * targets * head.in_features * head.out_features
        attention = 6 * timed("bmm", size * heads, width, head_dim)  # 2 forward, 4 backward, each (T, d) x (d, T)
        seconds += config.num_hidden_layers * attention
        flops += config.num_hidden_layers * 6 * 2 * size * heads * width * width * head_dim
        floors.append(seconds)
        flops_per_step.append(flops)
    return {"floor_seconds": floors, "flops": flops_per_step, "linear_params": params, "dtype": str(dtype),
            "gemm_gflops_per_s": sum(flops_per_step) / sum(floors) / 1e9, "repeats": repeats}


def measure_memory(name: str, batches_by_layout: dict, steps: int) -> float:
    """Run one variant alone (this process is a fresh one) and return its peak RSS in MB."""
    setup, kwargs = VARIANTS[name]
    step = setup(**kwargs)
    for batch in batches_by_layout[layout(name)][:steps]:
        step(batch)
    return peak_memory_mb()  # VmHWM: ru_maxrss would carry over the parent's peak through exec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant (after the warm-up rounds)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (compilation happens here)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pad-to", type=int, default=512, help="width of the padded HF baseline (0: skip it)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--memory", action="store_true", help="also measure each variant's peak RSS alone")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip timing the matrix-product floor of the timed batches")
    parser.add_argument("--floor-dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="dtype of the floor's products (auto: bf16 where this CPU multiplies bf16 natively, "
                             "else fp32, the dtype `peftlab train` runs there with run.bf16=auto)")
    parser.add_argument("--memory-only", help=argparse.SUPPRESS)  # internal: one variant, print its peak RSS
    parser.add_argument("--data-dir", default=os.environ.get("PEFTLAB_DATA_DIR", "../shared/data"))
    parser.add_argument("--out", default="benchmarks/results/bench_train.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    from peftlab.zoo import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    n_batches = args.warmup + args.steps
    batches = load_batches(tokenizer, n_batches, args.batch_size, args.data_dir)
    by_layout = {"padded": batches,
                 "pad512": load_batches(tokenizer, n_batches, args.batch_size, args.data_dir,
                                        pad_to=args.pad_to or None),
                 "packed": load_batches(tokenizer, n_batches, args.batch_size, args.data_dir, pack_per_row=2)}
    if args.memory_only:
        print(json.dumps({"peak_rss_mb": measure_memory(args.memory_only, by_layout, 3)}))
        return
    names = [n for n in args.variants if args.pad_to or not n.endswith("pad512")]
    steps = {}
    for name in names:
        setup, kwargs = VARIANTS[name]
        steps[name] = setup(**kwargs)
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    times: dict[str, list[float]] = {name: [] for name in names}
    losses: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n_batches):  # interleaved rounds; the first `warmup` rounds are not timed
        for name in names:
            batch = by_layout[layout(name)][i]
            start = time.perf_counter()
            losses[name].append(steps[name](batch))
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
        print(f"round {i + 1}/{n_batches} done", file=sys.stderr, flush=True)
    timed_tokens = sum(tokens[args.warmup:])
    from peftlab.hardware import bf16_matmul_native, describe

    floor_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(
        args.floor_dtype, torch.bfloat16 if bf16_matmul_native("cpu") else torch.float32)
    floor = matmul_floor(batches[args.warmup:], dtype=floor_dtype) if args.floor else None
    packed_floor = (matmul_floor(by_layout["packed"][args.warmup:], dtype=floor_dtype)
                    if args.floor and any(layout(n) == "packed" for n in names) else None)
    base = statistics.median(times["hf_peft_fp32"]) if "hf_peft_fp32" in times else None
    results = {"batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "pad_to": args.pad_to,
               "threads": torch.get_num_threads(), "tokens_per_step_mean": timed_tokens / args.steps,
               "command": " ".join(sys.argv), "hardware": describe(), "variants": {}}
    if floor:
        floor_median = statistics.median(floor["floor_seconds"])
        results["matmul_floor"] = {**floor, "median_floor_seconds": floor_median}
        print(f"{str(floor_dtype).removeprefix('torch.')} matrix-product floor: median {floor_median:.3f} s/step "
              f"over the timed batches "
              f"({statistics.median(floor['flops']) / 1e9:.0f} GFLOP, {floor['gemm_gflops_per_s']:.0f} GFLOP/s)")
    if packed_floor:
        packed_median = statistics.median(packed_floor["floor_seconds"])
        results["matmul_floor_packed"] = {**packed_floor, "median_floor_seconds": packed_median}
        print(f"the same, packed two examples to a row: median {packed_median:.3f} s/step "
              f"({statistics.median(packed_floor['flops']) / 1e9:.0f} GFLOP, "
              f"{packed_floor['gemm_gflops_per_s']:.0f} GFLOP/s)")
    header = f"{'variant':<30}{'median s/step':>14}{'tokens/s':>10}{'vs hf_peft_fp32':>17}"
    header += f"{'vs floor':>10}" if floor else ""
    print(header + ("   peak RSS alone" if args.memory else "") + "   first/last loss")
    for name in names:
        med = statistics.median(times[name])
        row = {"median_step_seconds": med, "tokens_per_second": timed_tokens / sum(times[name]),
               "speedup_vs_hf_peft_fp32": base / med if base else None, "losses": losses[name]}
        if floor:
            # each timed step over its own batch's floor, then the median (batches differ in width)
            row["step_over_padded_floor"] = statistics.median(t / f for t, f in zip(times[name],
                                                                                     floor["floor_seconds"]))
            own = packed_floor if layout(name) == "packed" else floor
            row["step_over_floor"] = statistics.median(t / f for t, f in zip(times[name], own["floor_seconds"]))
        if args.memory:
            out = subprocess.run([sys.executable, __file__, "--memory-only", name, "--data-dir", args.data_dir,
                                  "--batch-size", str(args.batch_size),
                                  "--pad-to", str(args.pad_to or 512)], capture_output=True, text=True, check=True)
            row["peak_rss_mb_alone"] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        results["variants"][name] = row
        ratio = f"{base / med:>16.2f}x" if base else f"{'-':>17}"
        memory = f"{row['peak_rss_mb_alone']:>14.0f} MB" if args.memory else ""
        over = f"{row['step_over_floor']:>9.2f}x" if floor else ""
        print(f"{name:<30}{med:>14.3f}{row['tokens_per_second']:>10.1f}{ratio}{over}{memory}   "
              f"{losses[name][0]:.3f}/{losses[name][-1]:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
