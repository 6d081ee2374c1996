"""Decoding time for E2E test MRs: a plain HF peft generate loop vs peftlab's generate path, side by side.

``hf_peft_fp32`` is the loop the issue measured: HF peft's LoRA model, the first ``--baseline-limit`` test MRs in
input order, batch 16, greedy, up to 60 new tokens, no stop at the end of the line. peftlab decodes the same MRs
(``peftlab_same_mrs``: once per unique MR, batched by prompt length, KV cache, stop at EOS or a line break, with
the attention kernel `peftlab train` decodes with: sdpa on the CPU), then the first ``--limit`` unique test MRs for
every ``--runs`` entry ``WEIGHTS:BEAMS[:VARIANT]``: frozen weights in fp32 (``float32``) or bf16 (``bfloat16``, what
a ``peftlab train --bf16`` run decodes with), greedy (1) or beam search, and the variant:

- none: peftlab's decoding engine (``generate_texts(engine="peftlab")``: its own greedy loop, on a KV cache that
  grows in place, that drops finished rows; its own beam search, which prefills each prompt once and drops the
  prompts whose search is over);
- ``transformers``: the same batches through plain ``model.generate`` (``engine="transformers"``), the reference;
- ``old-head``: peftlab's engine without the contiguous LM-head input (``peftlab.generate.contiguous_head_input``);
- ``drop-finished``: peftlab's beam search with ``drop_finished=True`` (prompts whose search is over leave the batch;
  not ``generate_texts``' default, because on some CPU kernels it changes outputs);
- ``dispatch-mode``: on a CPU that only emulates bf16, the fp32-kernel products through a ``TorchDispatchMode`` (a
  Python call for every op) instead of the products' replaced CPU kernels (``Fp32MatmulsForBf16(implementation=
  "mode")``), what that path cost before 2026-12-07.

On a CPU that only emulates bf16, ``bfloat16`` entries decode as ``peftlab train --bf16`` does there: every product
through an fp32 kernel, the frozen weights read from fp32 copies (``peftlab.train.bf16_gemm``); each entry records
``bf16_matmuls``.

Each run records an md5 of its outputs and is compared with every earlier run of the same WEIGHTS:BEAMS on the same
MRs (``same_outputs_as``), so either engine may go first. The model carries a fresh LoRA adapter (B = 0: the base
model's outputs), or with ``--adapter DIR`` a trained one (a run folder's ``adapter/``; its outputs are what a report
would score). The entries run in the order given, in one process; peak RSS is the process's, after all runs.

    .venv/bin/python benchmarks/bench_decode.py [--limit 630] [--batch-size 64] [--baseline-limit 64]
        [--runs bfloat16:1 bfloat16:1:transformers bfloat16:4 bfloat16:4:transformers] [--adapter RUN/adapter]
        [--save-outputs DIR]
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch


VARIANTS = ("transformers", "old-head", "drop-finished", "dispatch-mode")


def hf_peft_decode(prompts: list[str], tokenizer, batch_size: int, max_new_tokens: int) -> list[str]:
    import peft

    from peftlab.zoo import load_model

    model = peft.get_peft_model(load_model("smollm2-135m"),
                                peft.LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    model.eval()
    tokenizer.padding_side = "left"
    outputs = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True)
            generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=tokenizer.pad_token_id)
            outputs += tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=630, help="test MRs to decode (630 = all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--runs", nargs="+", default=["bfloat16:1", "bfloat16:1:transformers", "bfloat16:4",
                                                      "bfloat16:4:transformers"],
                        help="WEIGHTS:BEAMS[:VARIANT] entries: WEIGHTS float32 or bfloat16, VARIANT one of "
                             f"{', '.join(VARIANTS)} (see above)")
    parser.add_argument("--beam-limit", type=int, default=None,
                        help="decode only the first N MRs in the beam-search entries (default: --limit)")
    parser.add_argument("--adapter", default=None, help="a saved adapter folder (a run's adapter/) instead of a "
                                                         "fresh LoRA")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--baseline-limit", type=int, default=64, help="MRs for the HF peft loop (0: skip it)")
    parser.add_argument("--data-dir", default=os.environ.get("PEFTLAB_DATA_DIR", "../shared/data"))
    parser.add_argument("--out", default="benchmarks/results/bench_decode.json")
    parser.add_argument("--save-outputs", default=None, metavar="DIR",
                        help="also write each entry's outputs, one per line in MR order, to DIR/<entry>.txt "
                             "(score them with `peftlab evaluate e2e`)")
    args = parser.parse_args()
    runs = []
    for entry in args.runs:
        parts = entry.split(":")
        if (len(parts) not in (2, 3) or parts[0] not in ("float32", "bfloat16") or not parts[1].isdigit()
                or int(parts[1]) < 1 or (len(parts) == 3 and parts[2] not in VARIANTS)):
            parser.error(f"--runs {entry!r}: expected WEIGHTS:BEAMS[:VARIANT] with WEIGHTS float32 or bfloat16, "
                         f"BEAMS >= 1 and VARIANT one of {', '.join(VARIANTS)}, e.g. bfloat16:4:transformers")
        runs.append((parts[0], int(parts[1]), parts[2] if len(parts) == 3 else ""))
    import peftlab.generate
    from peftlab.train import bf16_gemm
    from peftlab.train.speed import cast_frozen_weights
    from peftlab import LoraConfig, PeftModel, get_peft_model
    from peftlab.data import linearize_mr, load_e2e
    from peftlab.generate import generate_texts
    from peftlab.train.speed import decoding_attn_implementation, resolve_attn_implementation
    from peftlab.zoo import load_model, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer("smollm2-135m")
    instances = load_e2e("test", args.data_dir).instances
    prompts = [linearize_mr(inst.mr) + " ||" for inst in instances]
    results = {"command": " ".join(sys.argv), "max_new_tokens": args.max_new_tokens,
               "threads": torch.get_num_threads(), "runs": {}}

    def record(name: str, seconds: float, outputs: list[str], **extra) -> None:
        words = sum(len(o.split()) for o in outputs) / max(len(outputs), 1)
        results["runs"][name] = {"n_mrs": len(outputs), "seconds": seconds, "mrs_per_second": len(outputs) / seconds,
                                 "mean_words": words, **extra}
        print(f"{name:<38} {len(outputs):>4} MRs in {seconds:7.1f} s ({len(outputs) / seconds:6.2f} MR/s, "
              f"{words:.1f} words/output)", flush=True)

    attention = decoding_attn_implementation("auto") or resolve_attn_implementation("auto")  # as `peftlab train`
    results["attn_implementation"] = attention
    def fresh_model():
        base = load_model("smollm2-135m", attn_implementation=attention)
        if args.adapter:
            return PeftModel.from_pretrained(base, args.adapter)
        return get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules=["q", "v"]))

    results["adapter"] = args.adapter or "fresh LoRA r=4 q,v (B = 0)"
    model = fresh_model()
    if args.baseline_limit:
        subset = prompts[: args.baseline_limit]
        start = time.perf_counter()
        outputs = hf_peft_decode(subset, load_tokenizer("smollm2-135m"), 16, args.max_new_tokens)
        record("hf_peft_fp32", time.perf_counter() - start, outputs, batch_size=16, beams=1, stop_at_newline=False)
        start = time.perf_counter()
        outputs = generate_texts(model, tokenizer, subset, max_new_tokens=args.max_new_tokens,
                                 batch_size=args.batch_size, progress=False)
        record("peftlab_same_mrs", time.perf_counter() - start, outputs, batch_size=args.batch_size, beams=1)
        base, ours = results["runs"]["hf_peft_fp32"]["seconds"], results["runs"]["peftlab_same_mrs"]["seconds"]
        print(f"peftlab vs HF peft on the same {len(subset)} MRs: {base / ours:.1f}x faster")
    unique = list(dict.fromkeys(prompts))[: args.limit]
    engine_md5: dict[tuple[str, int, int], dict[str, str]] = {}
    for weights, beams, variant in runs:
        model = fresh_model()
        if weights == "bfloat16":
            cast_frozen_weights(model, torch.bfloat16)
        head = model.model.get_output_embeddings()
        saved_hook = peftlab.generate.contiguous_head_input
        if variant == "old-head":
            head._forward_pre_hooks.clear()
            peftlab.generate.contiguous_head_input = lambda m: False
        saved_beam = peftlab.generate.beam_generate
        if variant == "drop-finished":
            peftlab.generate.beam_generate = functools.partial(saved_beam, drop_finished=True)
        batch_size = args.batch_size if beams == 1 else max(1, args.batch_size // 2)
        inputs = unique if beams == 1 or args.beam_limit is None else unique[: args.beam_limit]
        engine = "transformers" if variant == "transformers" else "peftlab"
        # bf16 on a CPU that only emulates it: the products through fp32 kernels, the frozen weights from fp32
        # copies, as a `peftlab train --bf16` run decodes there (peftlab.train.bf16_gemm)
        fp32_kernels = weights == "bfloat16" and bf16_gemm.wanted(True, "cpu")
        copies = (bf16_gemm.FrozenFp32Copies(p for p in model.parameters() if not p.requires_grad)
                  if fp32_kernels else None)
        try:
            start = time.perf_counter()
            implementation = "mode" if variant == "dispatch-mode" else "auto"
            with bf16_gemm.fp32_matmuls_for_bf16(fp32_kernels, copies, implementation):
                outputs = generate_texts(model, tokenizer, inputs, num_beams=beams,
                                         max_new_tokens=args.max_new_tokens, batch_size=batch_size, progress=True,
                                         engine=engine)
            seconds = time.perf_counter() - start
        finally:
            peftlab.generate.contiguous_head_input = saved_hook
            peftlab.generate.beam_generate = saved_beam
        name = f"peftlab_{weights}_beams_{beams}" + (f"_{variant.replace('-', '_')}" if variant else "")
        md5 = hashlib.md5("\n".join(outputs).encode()).hexdigest()
        extra = {}
        earlier = engine_md5.setdefault((weights, beams, len(inputs)), {})
        if earlier:  # the runs of the same WEIGHTS:BEAMS on the same MRs before this one
            extra["same_outputs_as"] = {other: other_md5 == md5 for other, other_md5 in earlier.items()}
        earlier[name] = md5
        record(name, seconds, outputs, batch_size=batch_size, beams=beams, weights=weights, engine=engine,
               outputs_md5=md5, bf16_matmuls=("fp32 kernels" if fp32_kernels else "native") if weights == "bfloat16"
               else None, **extra)
        if args.save_outputs:
            folder = Path(args.save_outputs)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.txt").write_text("".join(o + "\n" for o in outputs), encoding="utf-8")
        for other, same in extra.get("same_outputs_as", {}).items():
            print(f"  same outputs as {other}: {same}")
        del model
    from peftlab.train.rundir import peak_memory_mb

    results["peak_rss_mb"] = peak_memory_mb()
    print(f"peak RSS: {results['peak_rss_mb']:.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
