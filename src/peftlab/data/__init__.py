"""Datasets: the E2E NLG Challenge (official release CSVs) and GLUE (standard TSV layout or the hub).

Offline, every loader takes a data directory (``data_dir=`` / ``--data-dir``) or reads ``$PEFTLAB_DATA_DIR``; the
directory holds ``e2e/`` and ``glue/<TASK>/``. See docs/data-and-metrics.md.
"""
from __future__ import annotations

from .e2e import (
    E2E_RELEASE_URL,
    MR_FORMATS,
    E2EInstance,
    E2ERecord,
    E2ESplit,
    MRFormat,
    download_e2e,
    group_references,
    linearize_mr,
    load_e2e,
    parse_e2e_csv,
    parse_mr,
    read_e2e_csv,
    read_lora_file,
)
from .files import DATA_DIR_ENV, default_data_dir, read_text
from .glue import GLUE_TASKS, GlueExample, GlueSplit, GlueTask, get_task, load_glue, parse_glue_tsv
from .subset import SubsetInfo, SubsetSpec, apply_subset, select_indices

__all__ = [
    "DATA_DIR_ENV",
    "E2E_RELEASE_URL",
    "GLUE_TASKS",
    "MR_FORMATS",
    "E2EInstance",
    "E2ERecord",
    "E2ESplit",
    "GlueExample",
    "GlueSplit",
    "GlueTask",
    "MRFormat",
    "SubsetInfo",
    "SubsetSpec",
    "apply_subset",
    "default_data_dir",
    "download_e2e",
    "get_task",
    "group_references",
    "linearize_mr",
    "load_e2e",
    "load_glue",
    "parse_e2e_csv",
    "parse_glue_tsv",
    "parse_mr",
    "read_e2e_csv",
    "read_lora_file",
    "read_text",
    "select_indices",
]
