"""Run folders: refuse to mix runs, record what reproduces one (resolved config, versions, git, seed), undo a
failed set-up, and cut the metrics log back to a checkpoint."""
from __future__ import annotations

import json
import platform
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import ConfigError
from .recipe import Recipe


def prepare_run_dir(output_dir: Path, recipe: Recipe, *, resume: bool, overwrite: bool) -> Path:
    """Create ``output_dir``; an existing run there is an error unless resuming the same recipe or overwriting."""
    from ..io import writable_dir

    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"run.output_dir {output_dir}: is a file, not a folder; choose another --output-dir")
    config_path = output_dir / "config.yaml"
    if config_path.exists():
        if overwrite:
            shutil.rmtree(output_dir)
        elif not resume:
            raise ConfigError(f"{output_dir} already holds a run; pass --resume to continue it or --overwrite to "
                              "replace it, or choose another --output-dir")
        else:
            previous = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            current = _comparable(recipe.to_dict())
            if _comparable(_filled_from(previous, current)) != current:
                raise ConfigError(f"{output_dir}: --resume with a different recipe than the run there "
                                  f"({config_path}); use a new --output-dir")
    elif output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConfigError(f"{output_dir} exists and is not a peftlab run folder; choose another --output-dir")
    writable_dir(output_dir, "run.output_dir")
    config_path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
    return output_dir


RESUME_TAKES_CURRENT = {("optim", "fused")}
"""Fields a run started before they existed resumes with as the current recipe sets them (the loop applies them to
the restored state: ``optim.fused`` on the loaded optimizer)."""


def _filled_from(previous: Any, current: dict[str, Any]) -> Any:
    """``previous`` (a run folder's config.yaml, written by a peftlab that may have lacked some recipe fields) with
    each missing field of a recipe section filled in: from ``current`` for :data:`RESUME_TAKES_CURRENT`, else with
    what that older run ran with (``recipe.legacy_value``, else the field's default), so any other change still
    refuses the resume."""
    from .recipe import SECTIONS, legacy_value

    if not isinstance(previous, dict):
        return previous
    filled = json.loads(json.dumps(previous))
    defaults = Recipe().to_dict()  # Recipe: imported at the top of this module
    for section in SECTIONS:
        if not (isinstance(filled.get(section), dict) and isinstance(current.get(section), dict)):
            continue
        for key, value in current[section].items():
            if key not in filled[section]:
                filled[section][key] = (value if (section, key) in RESUME_TAKES_CURRENT
                                        else legacy_value(section, key, filled.get("task", current.get("task")),
                                                          defaults[section].get(key)))
    return filled


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    """The recipe without fields that may change between a run and its resumption."""
    data = json.loads(json.dumps(data))
    data.get("run", {}).pop("output_dir", None)
    for key in ("max_steps", "epochs"):  # a resumed run may be extended
        data.get("optim", {}).pop(key, None)
    return data


def peak_memory_mb() -> float:
    """Peak memory of this process: CUDA max allocated when on GPU, else the peak resident set size.

    On Linux the peak RSS is ``VmHWM`` from /proc/self/status: ``ru_maxrss`` survives ``exec``, so a process started
    by a big parent (a benchmark driver, pytest) would report the parent's peak."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20


def git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parents[3]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import accelerate
    import transformers

    from .._version import __version__

    return {"peftlab": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "python": platform.python_version()}


def write_run_files(output_dir: Path, recipe: Recipe, metrics: dict[str, Any], data_meta: dict[str, Any]) -> None:
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    from ..hardware import describe

    meta = {"versions": versions(), "git_revision": git_revision(), "hardware": describe(), "seed": recipe.run.seed,
            "data": data_meta, "command": sys.argv}  # hardware: the machine that finished the run
    (output_dir / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")


def undo_run_dir(output_dir: Path, existed: bool) -> None:
    """Remove what a run that failed during set-up wrote (the whole folder if this run created it)."""
    if not existed:
        shutil.rmtree(output_dir, ignore_errors=True)
        return
    for name in ("config.yaml", "metrics.jsonl"):
        (output_dir / name).unlink(missing_ok=True)
    shutil.rmtree(output_dir / "trackers", ignore_errors=True)


def truncate_log(path: Path, last_step: int) -> None:
    """Keep the records of the JSONL log ``path`` up to and including step ``last_step`` (-1: none)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and _record_step(line) <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)


def _record_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a torn last line from a killed run: dropped
