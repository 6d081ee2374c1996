"""Benchmark suites: the resumable quality suite (protocols x arms x seeds -> `peftlab train` run folders ->
``benchmarks/results/quality.jsonl`` -> ``docs/benchmarks.md``)."""
from .results import ResultsFileError, append_result, latest_by_key, read_results
from .suite import RunSpec, Suite, load_suite

__all__ = ["ResultsFileError", "RunSpec", "Suite", "append_result", "latest_by_key", "load_suite", "read_results"]
