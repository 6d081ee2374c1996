"""Optional dependencies (extras): imported lazily, and a missing one fails with a message naming its extra.

A missing package is simulated with ``sys.modules[name] = None``, which makes ``import name`` raise
ModuleNotFoundError even when the package is installed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peftlab._optional import MissingDependencyError, require
from peftlab.errors import ModelInstallError, PeftlabError
from peftlab.metrics import bleu_nist, coco, ptb
from peftlab.metrics.e2e import score_e2e

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("sacrebleu", "pycocoevalcap", "matplotlib", "gguf", "tensorboard")


def _missing(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require("json", "metrics", "JSON").dumps([1]) == "[1]"
    _missing(monkeypatch, "sacrebleu")
    with pytest.raises(MissingDependencyError) as raised:
        require("sacrebleu.metrics.bleu", "metrics", "BLEU")  # a cached submodule does not hide the missing package
    assert isinstance(raised.value, ImportError) and isinstance(raised.value, PeftlabError)
    assert str(raised.value).startswith("BLEU needs sacrebleu: pip install 'peftlab[metrics]'")
    assert "-c constraints.txt -e '.[metrics]'" in str(raised.value)
    with pytest.raises(MissingDependencyError, match=r"needs no_such_pkg_xyz: pip install 'peftlab\[zoo\]'"):
        require("no_such_pkg_xyz.sub", "zoo", "something")


def test_metrics_without_the_metrics_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _missing(monkeypatch, "sacrebleu")
    monkeypatch.setattr(bleu_nist, "_TOKENIZER", None)
    for fn in (bleu_nist.corpus_bleu, bleu_nist.corpus_nist):
        with pytest.raises(MissingDependencyError, match=r"needs sacrebleu: pip install 'peftlab\[metrics\]'"):
            fn(["a b"], [["a b"]])
    with pytest.raises(MissingDependencyError, match=r"peftlab\[metrics\]"):
        score_e2e(["a b"], [["a b"]], tokenizer="python", meteor="skip")
    monkeypatch.undo()

    _missing(monkeypatch, "pycocoevalcap")
    for fn, name in ((coco.rouge_l, "ROUGE-L"), (coco.cider, "CIDEr")):
        with pytest.raises(MissingDependencyError, match=rf"^{name} needs pycocoevalcap: pip install 'peftlab\[metrics"):
            fn(["a b"], [["a b"]])
    monkeypatch.setattr(coco, "java_available", lambda: "/usr/bin/java")  # with Java, the jar is what is missing
    assert "METEOR needs the METEOR 1.5 jar of pycocoevalcap: pip install 'peftlab[metrics]'" in (
        coco.meteor_unavailable_reason() or "")
    monkeypatch.setattr(ptb, "java_available", lambda: "/usr/bin/java")
    with pytest.raises(ptb.TokenizerUnavailableError) as raised:
        ptb.resolve_backend("java")
    assert "peftlab[metrics]" in str(raised.value) and "tokenizer='python'" in str(raised.value)
    assert ptb.coco_tokenize(["It's £20."], "python") == ["it 's # 20"]  # the opt-in needs neither


def test_report_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from peftlab import report

    _missing(monkeypatch, "matplotlib")
    monkeypatch.setattr(report, "load_run", lambda path: object())
    monkeypatch.setattr(report, "expand_run_dirs", lambda dirs: [tmp_path])
    monkeypatch.setattr(report, "group_runs", lambda runs, group_by: [])
    with pytest.raises(MissingDependencyError, match=r"needs matplotlib: pip install 'peftlab\[report\]'"):
        report.write_report([tmp_path], tmp_path / "out")


def test_zoo_conversion_without_gguf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from peftlab.zoo.builders import SMOLLM2_GGUF_FILE, BuildContext, build_smollm2
    from peftlab.zoo.progress import ProgressReporter

    _missing(monkeypatch, "gguf")
    context = BuildContext(model_name="smollm2-135m", package_dir=tmp_path, output_dir=tmp_path / "out",
                           source_files={SMOLLM2_GGUF_FILE: tmp_path / SMOLLM2_GGUF_FILE},
                           progress=ProgressReporter("smollm2-135m", enabled=False))
    with pytest.raises(ModelInstallError, match=r"needs gguf: pip install 'peftlab\[zoo\]'"):
        build_smollm2(context)


def test_core_imports_need_no_optional_package() -> None:
    """The package, its CLI (every sub-command) and the metric/report/zoo modules import without any extra, and
    importing them loads no optional package even where all are installed."""
    imports = "import peftlab, peftlab.metrics, peftlab.metrics.e2e, peftlab.report, peftlab.zoo, peftlab.cli"
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in OPTIONAL)
    check_cli = ("text = peftlab.cli.build_parser().format_help(); "
                 "assert all(c in text for c in ('evaluate', 'report', 'models', 'train')), text")
    lazy = (f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & {set(OPTIONAL)!r}); "
            "assert not loaded, f'imported at start-up: {loaded}'")
    for code in (f"import sys; {blocked}; {imports}; {check_cli}", f"import sys; {imports}; {check_cli}; {lazy}"):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_extras_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    assert {"metrics", "zoo", "report", "tracking", "trl", "all", "test"} <= set(extras)
    hard = " ".join(project["dependencies"])
    for name in OPTIONAL:
        assert name not in hard, f"{name} must be an extra, not a hard dependency"
    assert not [d for d in project["dependencies"] if "==" in d], "exact pins belong in constraints.txt"
    pins = {line.split("==")[0].lower() for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
    for extra in ("metrics", "zoo", "report", "tracking", "trl", "test"):
        for requirement in extras[extra]:
            name = requirement.split(">")[0].split("<")[0].split("=")[0].strip().lower()
            assert name in pins, f"{name} (extra {extra}) has no exact version in constraints.txt"
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) == {"metrics", "zoo", "report", "tracking", "trl"}
