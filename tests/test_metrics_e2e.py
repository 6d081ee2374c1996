"""E2E metrics equal the official scorer (tuetschek/e2e-metrics) on the shared metric-check fixtures.

Every case of ../shared/data/e2e/metric_check/official_scores.json is scored and compared at the stated tolerances:
BLEU 1e-6 (BLEU_py), NIST 1e-3 (NIST_py), METEOR / ROUGE_L / CIDEr 1e-4. BLEU (sacrebleu) and ROUGE-L / CIDEr
(pycocoevalcap) are also checked to float precision (1e-14).

METEOR needs Java. If Java is missing the METEOR tests FAIL, unless PEFTLAB_ALLOW_NO_JAVA=1 explicitly allows
skipping them.
"""
from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import pytest

from peftlab.cli import main as cli_main
from peftlab.errors import ConfigError, DataError
from peftlab.metrics import coco as coco_mod
from peftlab.metrics import ptb as ptb_mod
from peftlab.metrics.bleu_nist import corpus_bleu, corpus_nist, mteval_tokenize
from peftlab.metrics.coco import Meteor, MetricUnavailableError, cider, meteor_unavailable_reason, rouge_l
from peftlab.metrics.e2e import read_predictions, read_references, score_e2e
from peftlab.metrics.ptb import TokenizerUnavailableError, coco_tokenize, ptb_tokenize_java, ptb_tokenize_python

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
E2E = SHARED / "e2e"
CHECK = E2E / "metric_check"

# case -> (hypothesis file, reference file, number of leading instances used or None)
CASES = {
    "template_full": ("metric_check/hyp_template.txt", "testset_w_refs.csv", None),
    "loo_full": ("metric_check/hyp_loo.txt", "metric_check/refs_loo.csv", None),
    "firstref_full": ("metric_check/hyp_firstref.txt", "testset_w_refs.csv", None),
    "template_first50": ("metric_check/hyp_template.txt", "testset_w_refs.csv", 50),
    "firstref_first50": ("metric_check/hyp_firstref.txt", "testset_w_refs.csv", 50),
    "template_full_vs_lora_tokenized_refs": ("metric_check/hyp_template.txt", "lora_format/test.txt", None),
}
TOL = {"BLEU": 1e-6, "NIST": 1e-3, "METEOR": 1e-4, "ROUGE_L": 1e-4, "CIDEr": 1e-4}
FLOAT_TOL = 1e-14  # sacrebleu's BLEU vs the official pymteval; pycocoevalcap's ROUGE-L/CIDEr vs the official coco code


@pytest.fixture(scope="module")
def shared_data_dir() -> Path:
    if not (E2E / "testset_w_refs.csv").is_file():
        pytest.fail(f"shared data not found at {SHARED} (the repository must sit beside shared/)")
    return SHARED


@pytest.fixture(scope="module")
def official(shared_data_dir: Path) -> dict:
    return json.loads((CHECK / "official_scores.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=None)
def load_case(case: str) -> tuple[list[str], list[list[str]]]:
    hyp_file, ref_file, first = CASES[case]
    refs = read_references(E2E / ref_file)
    hyps = read_predictions(E2E / hyp_file, expected=len(refs))
    if first is not None:
        hyps, refs = hyps[:first], refs[:first]
    return hyps, refs


@functools.lru_cache(maxsize=None)
def _tokenize(lines: tuple[str, ...]) -> list[str]:
    return ptb_tokenize_python(lines)


def tokenized_case(case: str) -> tuple[list[str], list[list[str]]]:
    """PTB-tokenized outputs and references (tokenized in separate runs, as the COCO code does)."""
    hyps, refs = load_case(case)
    it = iter(_tokenize(tuple(r for seg in refs for r in seg)))
    return _tokenize(tuple(hyps)), [[next(it) for _ in seg] for seg in refs]


@pytest.fixture(scope="module")
def meteor_scorer():
    reason = meteor_unavailable_reason()
    if reason is not None:
        if os.environ.get("PEFTLAB_ALLOW_NO_JAVA") == "1":
            pytest.skip(f"PEFTLAB_ALLOW_NO_JAVA=1 and {reason}")
        pytest.fail(f"{reason} (set PEFTLAB_ALLOW_NO_JAVA=1 to skip the METEOR tests explicitly)")
    with Meteor() as scorer:
        yield scorer


def test_all_official_cases_are_covered(official: dict) -> None:
    assert set(CASES) == {k for k in official if not k.startswith("_")}
    for case in CASES:
        hyps, refs = load_case(case)
        assert len(hyps) == len(refs) == official[case]["n_instances"]
        assert sum(len(r) for r in refs) == official[case]["n_refs"]


@pytest.mark.parametrize("case", list(CASES))
def test_bleu_nist_equal_official(case: str, official: dict) -> None:
    hyps, refs = load_case(case)
    assert abs(corpus_bleu(hyps, refs) - official[case]["BLEU_py"]) < TOL["BLEU"]
    assert abs(corpus_bleu(hyps, refs) - official[case]["BLEU_py"]) < FLOAT_TOL  # sacrebleu = pymteval
    assert abs(corpus_nist(hyps, refs) - official[case]["NIST_py"]) < TOL["NIST"]


@pytest.mark.parametrize("case", list(CASES))
def test_rouge_cider_equal_official(case: str, official: dict) -> None:
    tok_hyps, tok_refs = tokenized_case(case)
    assert abs(rouge_l(tok_hyps, tok_refs)[0] - official[case]["ROUGE_L"]) < min(TOL["ROUGE_L"], FLOAT_TOL)
    assert abs(cider(tok_hyps, tok_refs)[0] - official[case]["CIDEr"]) < min(TOL["CIDEr"], FLOAT_TOL)


@pytest.mark.parametrize("case", list(CASES))
def test_meteor_equals_official(case: str, official: dict, meteor_scorer: Meteor) -> None:
    tok_hyps, tok_refs = tokenized_case(case)
    assert abs(meteor_scorer.score(tok_hyps, tok_refs)[0] - official[case]["METEOR"]) < TOL["METEOR"]


def test_full_pipeline_with_official_jars(official: dict, meteor_scorer: Meteor) -> None:
    """score_e2e end to end with the official CoreNLP tokenizer jar and METEOR jar."""
    hyps, refs = load_case("template_full")
    scores = score_e2e(hyps, refs, tokenizer="java", meteor_scorer=meteor_scorer)
    assert scores.tokenizer == "ptb-java"
    expected = official["template_full"]
    assert abs(scores.BLEU - expected["BLEU_py"]) < TOL["BLEU"]
    assert abs(scores.NIST - expected["NIST_py"]) < TOL["NIST"]
    for name in ("METEOR", "ROUGE_L", "CIDEr"):
        assert abs(getattr(scores, name) - expected[name]) < TOL[name], name
    assert scores.n_instances == 630 and scores.n_references == 4693


def test_python_ptb_tokenizer_equals_official_jar(shared_data_dir: Path) -> None:
    """The pure-Python PTB lexer gives the jar's output on every test and dev reference, MR and fixture output."""
    if meteor_unavailable_reason() is not None and os.environ.get("PEFTLAB_ALLOW_NO_JAVA") == "1":
        pytest.skip("no Java")
    lines: list[str] = []
    for name in ("testset_w_refs.csv", "devset.csv"):
        lines += [r for seg in read_references(E2E / name) for r in seg]
    lines += [line.split(",")[0] for line in (E2E / "testset_w_refs.csv").read_text(encoding="utf-8").split("\n")[1:60]]
    for case in ("template_full", "loo_full"):
        lines += load_case(case)[0]
    assert ptb_tokenize_python(lines) == ptb_tokenize_java(lines)


def test_ptb_tokenizer_examples() -> None:
    lines = [
        "The Eagle's a kid-friendly coffee shop; prices £20-£25, it isn't cheap.",
        "'The Punter' is rated 5 out of 5 (\"excellent\") near St. John's... Cambridge etc.",
        "Cocum is cheap.It's near Café Rouge.",
    ]
    assert ptb_tokenize_python(lines) == [
        "the eagle 's a kid-friendly coffee shop prices # 20 # 25 it is n't cheap",
        "the punter is rated 5 out of 5 -lrb- excellent -rrb- near st. john 's cambridge etc.",
        "cocum is cheap.it 's near café rouge",
    ]
    assert coco_tokenize([], "python") == []


def test_mteval_tokenization() -> None:
    assert mteval_tokenize("It's £20-25, near U.S. 3.5 stars!") == [
        "It's", "£20", "-", "25", ",", "near", "U", ".", "S", ".", "3.5", "stars", "!"
    ]
    assert mteval_tokenize("") == [""]


def test_short_and_degenerate_segments() -> None:
    """sacrebleu floors the n-gram totals of hypotheses under 4 tokens at 0 (pymteval does not: documented)."""
    assert corpus_bleu(["the cat sat on the mat"], [["The cat sat on the mat."]]) == pytest.approx(math.exp(-1 / 6))
    assert corpus_bleu(["a"], [["b c d e"]]) == 0.0
    assert corpus_bleu([], []) == 0.0
    assert rouge_l([], []) == (0.0, []) and cider([], []) == (0.0, [])
    assert rouge_l(["a b"], [["a b", "c"]]) == (1.0, [1.0])
    for fn in (corpus_bleu, corpus_nist, rouge_l, cider):
        with pytest.raises(ValueError, match="reference"):
            fn(["a"], [[]])
        with pytest.raises(ValueError, match="1 hypotheses but 2 reference sets"):
            fn(["a"], [["a"], ["b"]])


def _no_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ptb_mod, "java_available", lambda: None)
    monkeypatch.setattr(coco_mod, "java_available", lambda: None)


def test_python_ptb_tokenizer_is_opt_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str], official: dict) -> None:
    """Without Java the default (official jar) fails and names the opt-in; each opt-in route then works."""
    _no_java(monkeypatch)
    monkeypatch.delenv("PEFTLAB_PTB_TOKENIZER", raising=False)
    hyps, refs = load_case("template_first50")
    with pytest.raises(TokenizerUnavailableError) as raised:
        score_e2e(hyps, refs, meteor="skip")
    message = str(raised.value)
    for needle in ("Java", "tokenizer='python'", "--tokenizer python", "PEFTLAB_PTB_TOKENIZER=python"):
        assert needle in message, needle
    with pytest.raises(TokenizerUnavailableError, match="tokenizer='python'"):
        coco_tokenize(["a b"], "java")
    with pytest.raises(ConfigError, match="opt-in"):
        score_e2e(hyps, refs, tokenizer="auto")
    refs50, pred50 = first50_files(tmp_path, "hyp_template.txt")
    argv = ["evaluate", "e2e", "--refs", str(refs50), "--pred", str(pred50), "--json"]
    assert cli_main(argv) == 1
    assert "--tokenizer python" in capsys.readouterr().err

    explicit = score_e2e(hyps, refs, tokenizer="python")  # opt-in 1: the argument (METEOR: unavailable)
    assert explicit.tokenizer == "ptb-python" and explicit.METEOR is None and "Java" in explicit.meteor_error
    monkeypatch.setenv("PEFTLAB_PTB_TOKENIZER", "python")  # opt-in 2: the environment (e.g. for training runs)
    from_env = score_e2e(hyps, refs, meteor="skip")
    assert from_env.tokenizer == "ptb-python"
    assert abs(from_env.CIDEr - official["template_first50"]["CIDEr"]) < TOL["CIDEr"]
    monkeypatch.delenv("PEFTLAB_PTB_TOKENIZER")
    assert cli_main(argv + ["--tokenizer", "python", "--meteor", "skip"]) == 0  # opt-in 3: the CLI flag
    rouge = json.loads(capsys.readouterr().out)["ROUGE_L"]
    assert abs(rouge - official["template_first50"]["ROUGE_L"]) < TOL["ROUGE_L"]
    monkeypatch.setenv("PEFTLAB_PTB_TOKENIZER", "jav")
    with pytest.raises(ConfigError, match="PEFTLAB_PTB_TOKENIZER must be 'java' or 'python'"):
        score_e2e(hyps, refs)


def test_meteor_unavailable_is_reported_not_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coco_mod, "java_available", lambda: None)
    hyps, refs = load_case("template_first50")
    scores = score_e2e(hyps, refs, tokenizer="python")
    assert scores.METEOR is None
    assert "Java" in (scores.meteor_error or "")
    assert scores.as_dict()["METEOR"] is None and "Java" in scores.as_dict()["METEOR_error"]
    assert "METEOR: unavailable" in scores.format()
    with pytest.raises(MetricUnavailableError, match="Java"):
        score_e2e(hyps, refs, tokenizer="python", meteor="require")


def first50_files(tmp_path: Path, hyp_name: str) -> tuple[Path, Path]:
    """The first 50 MR groups (= first 322 records) of the test references and the first 50 outputs."""
    refs = tmp_path / "refs50.csv"
    refs.write_text("\n".join((E2E / "testset_w_refs.csv").read_text(encoding="utf-8").split("\n")[:323]) + "\n",
                    encoding="utf-8")
    pred = tmp_path / "pred50.txt"
    pred.write_text("\n".join((CHECK / hyp_name).read_text(encoding="utf-8").split("\n")[:50]) + "\n", encoding="utf-8")
    return refs, pred


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], official: dict) -> None:
    refs, pred = first50_files(tmp_path, "hyp_template.txt")
    out = tmp_path / "scores.json"
    argv = ["evaluate", "e2e", "--refs", str(refs), "--pred", str(pred), "--json", "--tokenizer", "python",
            "--meteor", "skip", "--output", str(out)]
    assert cli_main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed)[:5] == ["BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"]
    assert printed["METEOR"] is None and printed["METEOR_error"] == "skipped on request"
    expected = official["template_first50"]
    assert abs(printed["BLEU"] - expected["BLEU_py"]) < TOL["BLEU"]
    assert abs(printed["NIST"] - expected["NIST_py"]) < TOL["NIST"]
    assert abs(printed["ROUGE_L"] - expected["ROUGE_L"]) < TOL["ROUGE_L"]
    assert abs(printed["CIDEr"] - expected["CIDEr"]) < TOL["CIDEr"]
    assert json.loads(out.read_text(encoding="utf-8")) == printed


def test_cli_text_and_missing_java_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coco_mod, "java_available", lambda: None)
    refs, pred = first50_files(tmp_path, "hyp_firstref.txt")
    assert cli_main(["evaluate", "e2e", "--refs", str(refs), "--pred", str(pred), "--tokenizer", "python"]) == 0
    captured = capsys.readouterr()
    assert "BLEU: 1.0000" in captured.out and "NIST: 11.0894" in captured.out
    assert "METEOR: unavailable" in captured.out
    assert "METEOR unavailable" in captured.err and "Java" in captured.err


# ------------------------------------------------------------------------------------------------ bad input
def test_prediction_count_mismatch_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = (CHECK / "hyp_template.txt").read_text(encoding="utf-8").splitlines()
    short, long_ = tmp_path / "short.txt", tmp_path / "long.txt"
    short.write_text("\n".join(lines[:600]) + "\n", encoding="utf-8")
    long_.write_text("\n".join(lines + ["extra"]) + "\n", encoding="utf-8")
    refs = E2E / "testset_w_refs.csv"
    with pytest.raises(DataError, match=r"short\.txt: line 601: file ends after 600 predictions, 30 missing"):
        read_predictions(short, expected=630, refs_name=str(refs))
    with pytest.raises(DataError, match=r"long\.txt: line 631: 1 prediction line\(s\) more than MRs"):
        read_predictions(long_, expected=630)
    assert cli_main(["evaluate", "e2e", "--refs", str(refs), "--pred", str(short), "--meteor", "skip"]) == 1
    err = capsys.readouterr().err
    assert "short.txt" in err and "line 601" in err and "630 MRs" in err


def test_bad_reference_files(tmp_path: Path) -> None:
    cases = {
        "missing.csv": ('mr,text\n"name[A]",A is here.\n', r"missing\.csv: line 1: no `ref` column"),
        "quoting.csv": ('mr,ref\n"name[A]","A is here.\n"name[B]",B.\n', r"quoting\.csv: line 2: broken quoting .*line 3"),
        "unclosed.csv": ('mr,ref\n"name[A]",A.\n"name[B]","B.\n', r"unclosed\.csv: line 3: a quoted field .* never closed"),
        "badquote.csv": ('mr,ref\n"name[A]","A is" here.\n', r"badquote\.csv: line 2: broken quoting"),
        "empty.csv": ("", r"empty\.csv: line 1: empty file"),
        "fields.csv": ('mr,ref\n"name[A]",A,extra\n', r"fields\.csv: line 2: expected 2 fields"),
        "header.csv": ("mr,ref\n", r"header\.csv: line 1: no records"),
    }
    for name, (content, pattern) in cases.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        with pytest.raises(DataError, match=pattern):
            read_references(path)
    bad = tmp_path / "latin1.csv"
    bad.write_bytes('mr,ref\n"name[A]","Caf\u00e9 A."\n'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: line 2: not valid UTF-8 \(byte 0xe9"):
        read_references(bad)
    pred = tmp_path / "pred.txt"
    pred.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"pred\.txt: line 2: not valid UTF-8"):
        read_predictions(pred)
    with pytest.raises(DataError, match="one hypothesis per MR"):
        score_e2e(["a"], [["a"], ["b"]], meteor="skip")


def test_reference_formats_agree(tmp_path: Path) -> None:
    refs_csv = read_references(E2E / "testset_w_refs.csv")
    lines = tmp_path / "refs.txt"
    lines.write_text("\n\n".join("\n".join(seg) for seg in refs_csv) + "\n", encoding="utf-8")
    assert read_references(lines) == refs_csv
    lora = read_references(E2E / "lora_format/test.txt")
    assert [len(s) for s in lora] == [len(s) for s in refs_csv]
