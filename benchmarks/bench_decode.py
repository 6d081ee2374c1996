"""Decoding time for E2E test MRs with peftlab's generate path (once per unique MR, batched by length, KV cache,
stop at the end of the line), greedy and beam search, on the offline SmolLM2-135M with a fresh LoRA adapter.

    .venv/bin/python benchmarks/bench_decode.py [--limit 630] [--batch-size 64] [--beams 1 4]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=630, help="test MRs to decode (630 = all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--data-dir", default=os.environ.get("PEFTLAB_DATA_DIR", "../shared/data"))
    parser.add_argument("--out", default="benchmarks/results/bench_decode.json")
    args = parser.parse_args()
    from peftlab import LoraConfig, get_peft_model
    from peftlab.data import linearize_mr, load_e2e
    from peftlab.generate import generate_texts
    from peftlab.zoo import load_model, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer("smollm2-135m")
    model = get_peft_model(load_model("smollm2-135m"), LoraConfig(r=4, lora_alpha=32, target_modules=["q", "v"]))
    instances = load_e2e("test", args.data_dir).instances[: args.limit]
    prompts = [linearize_mr(inst.mr) + " ||" for inst in instances]
    results = {"n_mrs": len(prompts), "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
               "threads": torch.get_num_threads(), "runs": {}}
    for beams in args.beams:
        start = time.perf_counter()
        outputs = generate_texts(model, tokenizer, prompts, num_beams=beams, max_new_tokens=args.max_new_tokens,
                                 batch_size=args.batch_size, progress=True)
        seconds = time.perf_counter() - start
        words = sum(len(o.split()) for o in outputs)
        results["runs"][f"beams_{beams}"] = {"seconds": seconds, "mrs_per_second": len(prompts) / seconds,
                                             "mean_words": words / len(outputs)}
        print(f"beams={beams}: {len(prompts)} MRs in {seconds:.1f} s ({len(prompts) / seconds:.2f} MR/s, "
              f"{words / len(outputs):.1f} words/output)")
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {results['peak_rss_mb']:.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
