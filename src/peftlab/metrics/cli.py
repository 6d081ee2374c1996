"""``peftlab evaluate``: score system outputs from the command line.

``peftlab evaluate e2e --refs REFS.csv --pred PRED.txt [--json]`` prints BLEU, NIST, METEOR, ROUGE_L and CIDEr as the
official E2E scorer does; ``peftlab evaluate glue --task MRPC --pred PRED.txt [--data-dir DIR]`` prints the task's
GLUE metrics against the dev labels.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register_cli"]


def _run_e2e(args: argparse.Namespace) -> int:
    from ..io import writable_file
    from .e2e import evaluate_e2e

    if args.output:  # checked before scoring, which can take minutes
        writable_file(args.output, "--output")
    scores = evaluate_e2e(
        args.refs,
        args.pred,
        refs_format=args.refs_format,
        tokenizer=args.tokenizer,
        meteor=args.meteor,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    result = scores.as_dict(details=args.details)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(scores.format())
    if scores.METEOR is None and args.meteor != "skip":
        print(f"peftlab: warning: METEOR unavailable: {scores.meteor_error}", file=sys.stderr)
    return 0


def _run_glue(args: argparse.Namespace) -> int:
    from ..data.glue import load_glue
    from .glue import glue_metrics, read_glue_predictions

    data = load_glue(args.task, args.split, data_dir=args.data_dir)
    preds = read_glue_predictions(args.pred, data)
    result = glue_metrics(data.task, preds, [e.label for e in data.examples])
    if args.json:
        print(json.dumps({"task": data.task.name, "split": data.split, "n": len(preds), **result}, indent=2))
    else:
        print(f"{data.task.name} {data.split} ({len(preds)} examples)")
        for name, value in result.items():
            print(f"{name}: {value:.4f}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``evaluate`` (with ``e2e`` and ``glue``) to the ``peftlab`` command line."""
    evaluate = subparsers.add_parser("evaluate", help="score system outputs (E2E, GLUE)", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = evaluate.add_subparsers(dest="eval_task", metavar="TASK")
    evaluate.set_defaults(func=lambda args: (evaluate.print_help(), 2)[1])

    e2e = tasks.add_parser("e2e", help="BLEU, NIST, METEOR, ROUGE-L, CIDEr as the official E2E scorer")
    e2e.add_argument("--refs", required=True, help="references: official `mr,ref` CSV, LoRA `context||ref` .txt, or text")
    e2e.add_argument("--pred", required=True, help="predictions: one line per MR instance, in reference order")
    e2e.add_argument("--json", action="store_true", help="print JSON (keys BLEU, NIST, METEOR, ROUGE_L, CIDEr)")
    e2e.add_argument("--output", help="also write the JSON to this file")
    e2e.add_argument("--details", action="store_true", help="add instance counts and the tokenizer used to the JSON")
    e2e.add_argument("--refs-format", choices=["auto", "csv", "lora", "lines"], default="auto",
                     help="reference file format (default: from the file name and content)")
    e2e.add_argument("--tokenizer", choices=["java", "python"], default=None,
                     help="PTB tokenizer for METEOR/ROUGE-L/CIDEr: the official CoreNLP jar (java, needs Java) or the "
                          "opt-in pure-Python port (python); default: $PEFTLAB_PTB_TOKENIZER, else java")
    e2e.add_argument("--meteor", choices=["auto", "require", "skip"], default="auto",
                     help="auto: METEOR if Java is available, else reported as unavailable; require: fail without it")
    e2e.add_argument("--quiet", action="store_true", help="no progress bar")
    e2e.set_defaults(func=_run_e2e)

    glue = tasks.add_parser("glue", help="GLUE metrics of predictions against a task's labels")
    glue.add_argument("--task", required=True, help="CoLA, SST-2, MRPC, RTE, STS-B, QNLI or WNLI")
    glue.add_argument("--pred", required=True, help="one prediction per line (label id or name; a number for STS-B)")
    glue.add_argument("--split", default="dev", choices=["train", "dev"])
    glue.add_argument("--data-dir", help="data directory holding glue/<TASK>/ (default: $PEFTLAB_DATA_DIR)")
    glue.add_argument("--json", action="store_true")
    glue.set_defaults(func=_run_glue)
