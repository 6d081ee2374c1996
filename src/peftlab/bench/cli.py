"""`peftlab bench quality plan|run|docs`: the resumable quality suite from the command line."""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

DEFAULT_SUITE = "benchmarks/quality/suite.yaml"
DEFAULT_RESULTS = "benchmarks/results/quality.jsonl"
DEFAULT_RUNS = "runs/quality"
DEFAULT_DOC = "docs/benchmarks.md"


def _selector(args: argparse.Namespace):
    from .runner import make_selector

    return make_selector(args.protocol or (), args.arm or (), args.seed or (), args.task or ())


def _load(args: argparse.Namespace):
    from .runner import check_selection
    from .suite import load_suite

    suite = load_suite(args.suite)
    check_selection(suite, args.protocol or ())
    return suite


def _plan(args: argparse.Namespace) -> int:
    from .runner import plan

    suite = _load(args)
    planned = plan(suite, Path(args.results), Path(args.runs_dir), _selector(args))
    for item in planned:
        if args.all or item.status != "done":
            reason = f"  ({item.reason})" if item.reason else ""
            print(f"{item.status:10s} {item.spec.key}{reason}")
    counts = Counter(item.status for item in planned)
    shown = {status: f"{n} {status}" for status, n in counts.items()}
    undecided = sum(1 for item in planned if item.conditional)
    if undecided:
        shown["waiting"] += f" ({undecided} of them lr-grid extensions, run only if the best lr lands on a grid edge)"
    print("[bench] " + ", ".join(shown[s] for s in sorted(shown)) + f" of {len(planned)} runs")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .runner import run_suite

    suite = _load(args)
    data_dir = args.data_dir or os.environ.get("PEFTLAB_DATA_DIR")
    recorded = run_suite(suite, Path(args.results), Path(args.runs_dir), data_dir=data_dir, select=_selector(args),
                         max_runs=args.max_runs, rerun_stale=args.rerun_stale,
                         allow_emulated_bf16=args.allow_emulated_bf16)
    print(f"[bench] recorded {recorded} run(s) in {args.results}")
    if args.docs:
        _docs(args)
    return 0


def _docs(args: argparse.Namespace) -> int:
    from .docs import write_benchmarks_doc

    suite = _load(args)
    out = write_benchmarks_doc(suite, Path(args.results), Path(args.out), runs_dir=Path(args.runs_dir),
                               data_dir=args.data_dir or os.environ.get("PEFTLAB_DATA_DIR"))
    print(f"[bench] wrote {out}")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default=DEFAULT_SUITE, help=f"suite file (default {DEFAULT_SUITE})")
    parser.add_argument("--results", default=DEFAULT_RESULTS, help=f"results JSONL (default {DEFAULT_RESULTS})")
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS, help=f"where run folders go (default {DEFAULT_RUNS})")
    parser.add_argument("--data-dir", help="folder holding e2e/ and glue/ (default: $PEFTLAB_DATA_DIR)")
    parser.add_argument("--protocol", action="append", help="only this protocol (repeatable)")
    parser.add_argument("--arm", action="append", help="only arms matching this glob, e.g. 'solo*' (repeatable)")
    parser.add_argument("--seed", type=int, action="append", help="only this seed (repeatable)")
    parser.add_argument("--task", action="append", help="only this task: e2e or a GLUE task (repeatable)")


def register_cli(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmark suites (quality: protocols x arms x seeds)",
                                  description="Benchmark suites. `peftlab bench quality run` trains what is missing.")
    kinds = bench.add_subparsers(dest="bench_kind", metavar="SUITE")
    quality = kinds.add_parser("quality", help="the resumable quality suite (benchmarks/quality/suite.yaml)")
    actions = quality.add_subparsers(dest="bench_action", metavar="ACTION")

    plan = actions.add_parser("plan", help="list each run's status (done/stale/partial/missing/waiting, and "
                                           "'not needed' for an lr-grid extension run the grid does not call for)")
    _common(plan)
    plan.add_argument("--all", action="store_true", help="also list the runs that are done")
    plan.set_defaults(func=_plan)

    run = actions.add_parser("run", help="train and record every selected run that is missing, in suite order")
    _common(run)
    run.add_argument("--max-runs", type=int, help="stop after recording this many runs")
    run.add_argument("--rerun-stale", action="store_true",
                     help="re-run runs whose result line came from another recipe (the new line supersedes it)")
    run.add_argument("--allow-emulated-bf16", action="store_true",
                     help="with PEFTLAB_BF16_MATMULS=native, still train the runs whose recipe has run.bf16 on a "
                          "machine that only emulates bf16 (no AVX512-BF16/AMX), in torch's emulated kernels "
                          "(skipped by default then: many times slower than fp32). Without it such runs train with "
                          "their bf16 products through fp32 kernels (peftlab.train.bf16_gemm)")
    run.add_argument("--docs", action="store_true", help=f"regenerate {DEFAULT_DOC} afterwards")
    run.add_argument("--out", default=DEFAULT_DOC, help=argparse.SUPPRESS)
    run.set_defaults(func=_run)

    docs = actions.add_parser("docs", help=f"regenerate {DEFAULT_DOC} (tables, plots, verdicts) from the results")
    _common(docs)
    docs.add_argument("--out", default=DEFAULT_DOC, help=f"markdown file (default {DEFAULT_DOC}); plots go beside "
                                                         "it in <name>/")
    docs.set_defaults(func=_docs)

    def _help(args: argparse.Namespace) -> int:
        (quality if getattr(args, "bench_kind", None) else bench).print_help()
        return 2

    bench.set_defaults(func=_help)
    quality.set_defaults(func=_help)
