"""`peftlab bench quality docs`: regenerate ``docs/benchmarks.md`` and its plots from the suite's result lines.

Everything comes from the newest result line of each run that is still in the suite (lines of protocols or arms
no longer in it are counted and ignored), so the page works on a partial suite: status, verdicts (rules in
:mod:`peftlab.bench.verdicts`), the differences from the papers' protocols, one section per protocol, plots,
hardware and versions. The markdown is deterministic: the same results give the same bytes (the PNGs aside).

The page is assembled in :mod:`.page` from the per-protocol tables (:mod:`.tables`, :mod:`.lr_tables`), the
majority-class floors of the GLUE tasks (:mod:`.floors`) and the figures (:mod:`.plots`); :mod:`.text` holds the
markdown formatting helpers they share.
"""
from .floors import NEAR_FLOOR, MajorityFloor, majority_floors
from .page import render_benchmarks_doc, write_benchmarks_doc
from .plots import PLOT_FILES, write_plots
from .tables import SPIKE, dev_spikes

__all__ = ["NEAR_FLOOR", "PLOT_FILES", "SPIKE", "MajorityFloor", "dev_spikes", "majority_floors",
           "render_benchmarks_doc", "write_benchmarks_doc", "write_plots"]
