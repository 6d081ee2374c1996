"""`peftlab report RUN_DIR... [--out DIR]`: compare finished `peftlab train` runs in one markdown file with plots.

Runs are grouped by (task, method, model, method_args), ignoring the seed, so the runs of a group are the seeds
of one recipe. Each group is a table row: trainable parameters, the task's metrics (the five E2E metrics, or the
GLUE task's metrics), train time and peak memory, each as mean ± sample std over the seeds with n shown. E2E and
each GLUE task get their own table. Plots (PNG): the headline metric vs trainable parameters, the loss curves,
Solo's t over training and the gated prefix's gate values over training (the last two when such runs are given).

Example::

    from peftlab.report import write_report
    path = write_report(["runs/lora-s0", "runs/lora-s1", "runs/solo-s0"], "report")  # -> report/report.md

A folder that is no run itself but holds run folders stands for them (``peftlab report runs/``). A run folder
missing ``metrics.json``, ``metrics.jsonl`` or ``config.yaml`` raises :class:`RunFolderError` (a
:class:`~peftlab.errors.DataError`) naming the folder and the file.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Sequence

from .runs import (
    E2E_METRICS,
    Group,
    RunFolderError,
    RunRecord,
    Stat,
    aggregate,
    expand_run_dirs,
    group_runs,
    load_run,
)
from .tables import format_stat, render_markdown

__all__ = [
    "E2E_METRICS",
    "Group",
    "REPORT_NAME",
    "RunFolderError",
    "RunRecord",
    "Stat",
    "aggregate",
    "expand_run_dirs",
    "format_stat",
    "group_runs",
    "load_run",
    "register_cli",
    "write_report",
]

REPORT_NAME = "report.md"
"""File name of the markdown report inside the output folder (the plots sit next to it)."""


def write_report(run_dirs: Iterable[str | Path], out_dir: str | Path, group_by: Sequence[str] = ()) -> Path:
    """Read ``run_dirs``, write ``out_dir/report.md`` and its PNG plots, and return the markdown's path.

    Every run folder is read before anything is written, so a bad folder leaves ``out_dir`` untouched.
    Raises :class:`RunFolderError` for a missing or incomplete run folder and when no run folder is given.
    """
    paths = expand_run_dirs(run_dirs)
    if not paths:
        raise RunFolderError("no run folders given; pass the --output-dir folders of `peftlab train` runs")
    runs = [load_run(path) for path in paths]
    groups = group_runs(runs, group_by)
    from ..io import writable_dir

    out = writable_dir(out_dir, "--out")
    from .._optional import require

    require("matplotlib", "report", "`peftlab report` (its plots)")  # the clear error, before plots imports it
    from .plots import write_plots  # matplotlib is imported only when plotting

    plots = [(title, path.relative_to(out)) for title, path in write_plots(groups, out)]
    report = out / REPORT_NAME
    report.write_text(render_markdown(groups, plots), encoding="utf-8")
    return report


def _run(args: argparse.Namespace) -> int:
    report = write_report(args.run_dirs, args.out, group_by=args.group_by)
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    print(f"[report] wrote {report}" + (f" and {', '.join(pngs)}" if pngs else ""), file=sys.stdout)
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command to ``peftlab``'s sub-parsers."""
    parser = subparsers.add_parser(
        "report", help="compare finished training runs: markdown table (mean ± std over seeds) and PNG plots",
        description="Group `peftlab train` run folders by (task, method, model, method_args), aggregate seeds to "
                    "mean ± std, and write DIR/report.md with PNG plots (metric vs trainable parameters, loss "
                    "curves, Solo's t, gated-prefix gates).")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run folders (--output-dir of `peftlab train`), or folders holding run folders")
    parser.add_argument("--out", default="report", metavar="DIR",
                        help="output folder for report.md and the plots (default: ./report)")
    parser.add_argument("--group-by", nargs="+", default=[], metavar="FIELD",
                        help="also split groups by these recipe fields, e.g. run.bf16 model.dtype or optim.lr")
    parser.set_defaults(func=_run)
