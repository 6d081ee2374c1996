"""E2E quality of the fast bf16 training path vs fp32, over seeds, through the real `peftlab train` pipeline.

Each precision trains LoRA (the shipped recipe e2e/smollm2-135m/lora: r=4, alpha=32, q,v, label smoothing 0.1) on the
offline SmolLM2-135M for the same number of steps with the same seeds, decodes the same test MRs greedily and
scores them with the five official E2E metrics; `peftlab report --group-by run.bf16` then puts the two precisions
side by side as mean ± std over the seeds. Variants:

- fp32: fp32 base weights, no autocast;
- bf16: bf16 autocast, bf16 frozen base weights (adapters fp32), torch.compile of the blocks.

    .venv/bin/python benchmarks/bench_bf16_quality.py [--steps 200] [--seeds 0 1] [--eval-limit 200]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PRECISIONS = {
    "fp32": [],
    "bf16": ["run.bf16=true", "model.dtype=bfloat16", "run.compile=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--eval-limit", type=int, default=200, help="test MRs decoded and scored per run")
    parser.add_argument("--runs-dir", default="runs/bf16-quality")
    parser.add_argument("--out", default="benchmarks/results/bf16_quality")
    parser.add_argument("--data-dir", default=os.environ.get("PEFTLAB_DATA_DIR", "../shared/data"))
    args = parser.parse_args()
    peftlab = str(Path(sys.executable).with_name("peftlab"))
    run_dirs = []
    for seed in args.seeds:
        for precision, overrides in PRECISIONS.items():
            run = Path(args.runs_dir) / f"{precision}-s{seed}"
            run_dirs.append(run)
            if (run / "metrics.json").is_file():
                print(f"[bench] {run} is done; skipping")
                continue
            command = [peftlab, "train", "e2e", "--model", "smollm2-135m", "--method", "lora", "--max-steps",
                       str(args.steps), "--eval-limit", str(args.eval_limit), "--seed", str(seed), "--output-dir",
                       str(run), "--data-dir", args.data_dir, "--overwrite", "--no-progress",
                       f"run.eval_every={max(1, args.steps // 4)}", *overrides]
            print("[bench] " + " ".join(command), flush=True)
            subprocess.run(command, check=True)
    subprocess.run([peftlab, "report", *map(str, run_dirs), "--out", args.out, "--group-by", "run.bf16"], check=True)
    summary = {}
    for run in run_dirs:
        metrics = json.loads((run / "metrics.json").read_text())
        summary[run.name] = {k: metrics.get(k) for k in ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr", "best_dev",
                                                          "train_seconds", "tokens_per_second", "peak_memory_mb")}
    Path(args.out, "runs.json").write_text(json.dumps({"command": " ".join(sys.argv), "runs": summary}, indent=2)
                                           + "\n")
    print(Path(args.out, "report.md").read_text())


if __name__ == "__main__":
    main()
