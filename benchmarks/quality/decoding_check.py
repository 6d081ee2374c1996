"""Does the E2E verdict depend on greedy decoding? The e2e-mini arms' finished runs decoded again with beam search.

The quality suite decodes E2E greedily (docs/benchmarks.md, "Differences from the papers' protocols"); the papers
decode with beam search (LoRA's E2E recipe: 10 beams, length penalty 0.9, no repeated 4-grams). This check takes the
e2e-mini run folders present on this machine (``runs/`` is not in git, so only the runs this machine trained), runs
``peftlab predict`` on each with the decoding settings asked for, and appends one line per (arm, seed, setting) to
``benchmarks/results/decoding_check.jsonl``: the five metrics under that setting next to the run's own greedy ones.
It is a check on the verdicts' robustness, not a verdict: ``peftlab bench quality docs`` shows the lines under
e2e-mini. Resumable: a (run, setting) already in the file is skipped; a decoding cut off starts again.

Each line also counts the outputs that repeat one of their own word 3-grams (``repeats``: greedy and under the
setting; ``peftlab.metrics.repetition``), a diagnostic of what the beam's n-gram block removes. A recorded line
without the counts gets them, as a newer copy of the line, where its run's predictions are on this machine.

    .venv/bin/python benchmarks/quality/decoding_check.py --arms lora solo-r4 kernel-mix \\
        --setting beam4=decode.num_beams=4,decode.length_penalty=0.9,decode.no_repeat_ngram_size=4
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
REPEAT_N = 3  # the n-gram size of the repetition counts


def parse_setting(text: str) -> tuple[str, list[str]]:
    """``NAME=KEY=VALUE,KEY=VALUE`` -> (NAME, [KEY=VALUE, ...])."""
    name, sep, rest = text.partition("=")
    overrides = [item for item in rest.split(",") if item]
    if not sep or not name or not overrides or any("=" not in item for item in overrides):
        raise SystemExit(f"--setting {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...], e.g. "
                         "beam4=decode.num_beams=4,decode.length_penalty=0.9")
    return name, overrides


def done_keys(path: Path) -> set[tuple[str, str, int, str]]:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            keys.add((record["protocol"], record["arm"], record["seed"], record["setting"]))
    return keys


def repeats(run: Path, setting: str, n_inputs: int) -> dict[str, int] | None:
    """Outputs repeating one of their own word 3-grams, in the run's greedy predictions and in the setting's (None
    unless both files are here with ``n_inputs`` lines each: a ``--limit`` trial overwrites the setting's file)."""
    from peftlab.metrics import outputs_with_repeated_ngram

    files = {"greedy": run / "predictions.txt", "setting": run / f"check-{setting}" / "predictions.txt"}
    texts = {k: f.read_text(encoding="utf-8").splitlines() if f.is_file() else [] for k, f in files.items()}
    if any(len(lines) != n_inputs for lines in texts.values()):
        return None
    return {"n": REPEAT_N, **{k: outputs_with_repeated_ngram(lines, REPEAT_N) for k, lines in texts.items()}}


def add_missing_repeats(results: Path, runs_dir: Path) -> None:
    """Append a copy with ``repeats`` of each newest line that lacks them, where its run's files are here."""
    if not results.exists():
        return
    newest = {}
    for line in results.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            newest[(record["protocol"], record["arm"], record["seed"], record["setting"])] = record
    for (protocol, arm, seed, setting), record in newest.items():
        if "repeats" in record:
            continue
        counts = repeats(runs_dir / protocol / record.get("task", "e2e") / arm / f"seed{seed}", setting,
                         record.get("n_inputs", -1))
        if counts is not None:
            print(f"[check] {arm} seed {seed} {setting}: outputs repeating a 3-gram, greedy {counts['greedy']} -> "
                  f"{counts['setting']} (added to its line)")
            with results.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({**record, "repeats": counts}) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", default=str(ROOT / "runs" / "quality"), help="the suite's run folders")
    parser.add_argument("--protocol", default="e2e-mini")
    parser.add_argument("--arms", nargs="+", default=["lora", "solo-r4", "kernel-mix"])
    parser.add_argument("--setting", action="append", required=True, metavar="NAME=KEY=VALUE,...",
                        help="a named decoding setting (repeatable)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "decoding_check.jsonl"))
    parser.add_argument("--limit", type=int, default=None, help="only the first N test MRs (a trial; not recorded)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from peftlab.hardware import describe
    from peftlab.train.predict import predict
    from peftlab.train.rundir import git_revision, versions

    settings = [parse_setting(s) for s in args.setting]
    results = Path(args.results)
    add_missing_repeats(results, Path(args.runs_dir))
    done = done_keys(results)
    base = Path(args.runs_dir) / args.protocol / "e2e"
    for arm in args.arms:
        for run in sorted(p for p in (base / arm).glob("seed*") if p.is_dir()):
            trained_path = run / "metrics.json"
            if not (run / "adapter").is_dir() or not trained_path.is_file():
                print(f"[check] {run}: not finished here, skipped")
                continue
            seed = int(run.name[len("seed"):])
            trained = json.loads(trained_path.read_text(encoding="utf-8"))
            for name, overrides in settings:
                if args.limit is None and (args.protocol, arm, seed, name) in done:
                    print(f"[check] {arm} seed {seed} {name}: recorded, skipped")
                    continue
                extra = [f"data.eval_limit={args.limit}"] if args.limit else []
                started = time.perf_counter()
                metrics = predict(run, overrides + extra, output_dir=run / f"check-{name}", overwrite=True,
                                  progress=False)
                seconds = time.perf_counter() - started
                print(f"[check] {arm} seed {seed} {name}: " + "  ".join(f"{m}={metrics[m]:.4f}" for m in METRICS)
                      + f"  (greedy BLEU {trained.get('BLEU', float('nan')):.4f}; {seconds:.0f} s)")
                if args.limit:
                    continue
                record = {"protocol": args.protocol, "task": "e2e", "arm": arm, "seed": seed, "setting": name,
                          "overrides": overrides, "metrics": {m: metrics[m] for m in METRICS},
                          "greedy": {m: trained.get(m) for m in METRICS}, "n_inputs": metrics["n_inputs"],
                          "repeats": repeats(run, name, metrics["n_inputs"]),
                          "decode_seconds": metrics["final_eval_seconds"], "bf16_matmuls": metrics["bf16_matmuls"],
                          "hardware": describe(), "versions": versions(), "git_revision": git_revision()}
                if record["repeats"]:
                    print(f"[check] {arm} seed {seed} {name}: outputs repeating a 3-gram, greedy "
                          f"{record['repeats']['greedy']} -> {record['repeats']['setting']}")
                results.parent.mkdir(parents=True, exist_ok=True)
                with results.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
