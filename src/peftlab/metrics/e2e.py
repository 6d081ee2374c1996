"""The five E2E metrics -- BLEU, NIST, METEOR, ROUGE-L, CIDEr -- equal to the official E2E scorer.

Reproduces ``measure_scores.py`` of ``tuetschek/e2e-metrics`` in its ``-p`` (Python MT-eval) mode, the mode the
LoRA repository reports:

* BLEU and NIST: :mod:`peftlab.metrics.bleu_nist` on the raw strings (mteval tokenization, lowercased; BLEU is
  sacrebleu's, NIST our own).
* METEOR, ROUGE-L, CIDEr: the COCO caption code (:mod:`peftlab.metrics.coco`: pycocoevalcap's scorers and the
  METEOR 1.5 jar) on PTB-tokenized, lowercased, punctuation-free strings (:mod:`peftlab.metrics.ptb`). The PTB
  tokenizer is the official CoreNLP jar and needs Java; without Java scoring fails with a message naming the
  opt-in to the pure-Python tokenizer (``tokenizer="python"`` or ``PEFTLAB_PTB_TOKENIZER=python``). METEOR runs
  the official METEOR 1.5 jar and so needs Java too; with the Python tokenizer and no Java, METEOR is reported as
  unavailable (``None`` plus a message), never as 0.

Needs the ``metrics`` extra (``pip install 'peftlab[metrics]'``: sacrebleu, pycocoevalcap).

All scores are fractions as the official scorer prints them (BLEU 0.6619, not 66.19).

Input files (:func:`read_references`, :func:`read_predictions`): references as the official ``mr,ref`` CSV (records
with the same MR on consecutive lines form one multi-reference instance), as a LoRA-format ``context||ref`` text file
(grouped by consecutive identical context), or as plain text with one reference per line and instances separated
by blank lines (the official scorer's text format); predictions as plain text, one line per instance in the order
of the references. Like the official reader, lines are stripped of surrounding white space and the CSV mojibake
fixes of ``measure_scores.py`` (``Ł``, ``Â£`` -> ``£``; ``Ã©``, ``ã©`` -> ``é``) are applied to references.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from tqdm.auto import tqdm

from ..data.e2e import group_references, parse_e2e_csv, read_lora_file
from ..data.files import read_text
from ..errors import DataError
from .bleu_nist import corpus_bleu, corpus_nist
from .coco import Meteor, MetricUnavailableError, cider, meteor_unavailable_reason, rouge_l
from .ptb import coco_tokenize, resolve_backend

__all__ = [
    "E2E_METRICS",
    "E2EScores",
    "MetricUnavailableError",
    "evaluate_e2e",
    "read_predictions",
    "read_references",
    "score_e2e",
]

#: Metric names, in the official scorer's order (also the JSON keys).
E2E_METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")

_MOJIBAKE_FIXES = (("Ł", "£"), ("Â£", "£"), ("Ã©", "é"), ("ã©", "é"))
MeteorMode = Literal["auto", "require", "skip"]


@dataclass
class E2EScores:
    """Scores of one system output. ``METEOR`` is None when it could not be computed; ``meteor_error`` says why."""

    BLEU: float
    NIST: float
    METEOR: float | None
    ROUGE_L: float
    CIDEr: float
    n_instances: int
    n_references: int
    tokenizer: str
    meteor_error: str | None = None
    segments: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def as_dict(self, details: bool = False) -> dict[str, object]:
        """The five metrics under their official names (plus run details when ``details``)."""
        out: dict[str, object] = {name: getattr(self, name) for name in E2E_METRICS}
        if self.METEOR is None:
            out["METEOR_error"] = self.meteor_error
        if details:
            info = asdict(self)
            info.pop("segments")
            out.update({k: v for k, v in info.items() if k not in E2E_METRICS and k != "meteor_error"})
        return out

    def format(self) -> str:
        """Human-readable block like the official scorer's output."""
        lines = ["SCORES:", "=============="]
        for name in E2E_METRICS:
            value = getattr(self, name)
            lines.append(f"{name}: {value:.4f}" if value is not None else f"{name}: unavailable ({self.meteor_error})")
        return "\n".join(lines)


def score_e2e(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    tokenizer: str | None = None,
    meteor: MeteorMode = "auto",
    meteor_scorer: Meteor | None = None,
    progress: bool = False,
) -> E2EScores:
    """Score ``hypotheses[i]`` against the references ``references[i]`` with the five official E2E metrics.

    Args:
        tokenizer: PTB tokenizer for METEOR/ROUGE-L/CIDEr: ``"java"`` (the official CoreNLP jar; fails without Java,
            naming the opt-in) or ``"python"`` (opt-in pure-Python port); None: ``$PEFTLAB_PTB_TOKENIZER``, else
            ``"java"``.
        meteor: ``"auto"`` (METEOR when Java is available, else None with a message), ``"require"`` (raise
            :class:`MetricUnavailableError` without Java) or ``"skip"``.
        meteor_scorer: an already running :class:`Meteor` to reuse (saves the jar's start-up of several seconds).
        progress: show a progress bar over the metrics.
    """
    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets: one hypothesis per MR")
    if not references:
        raise DataError("nothing to score: no references")
    for i, refs in enumerate(references):
        if not refs:
            raise DataError(f"instance {i + 1} has no references")
    if meteor not in ("auto", "require", "skip"):
        raise ValueError(f"meteor must be 'auto', 'require' or 'skip', not {meteor!r}")
    backend = resolve_backend(tokenizer)  # fails here, before any work, when the jar cannot run
    hyps = [h.strip() for h in hypotheses]
    refs = [[r.strip() for r in seg] for seg in references]

    own_meteor: Meteor | None = None
    meteor_error: str | None = None
    if meteor == "skip":
        meteor_error = "skipped on request"
    elif meteor_scorer is None:
        meteor_error = meteor_unavailable_reason()
        if meteor_error is not None and meteor == "require":
            raise MetricUnavailableError(meteor_error)
        if meteor_error is None:
            own_meteor = Meteor()  # starts loading now, in parallel with the other metrics
    scorer = meteor_scorer or own_meteor

    bar = tqdm(total=5, desc="E2E metrics", disable=not progress, leave=False)
    try:
        bleu, nist = corpus_bleu(hyps, refs), corpus_nist(hyps, refs)
        bar.update(2)
        # references and outputs are tokenized in two runs, as the COCO code does (a line's last token can depend
        # on the next line, so the concatenation order matters)
        it = iter(coco_tokenize([r for seg in refs for r in seg], backend))
        tok_refs = [[next(it) for _ in seg] for seg in refs]
        tok_hyps = coco_tokenize(hyps, backend)
        n_refs = sum(len(seg) for seg in refs)
        rouge, rouge_seg = rouge_l(tok_hyps, tok_refs)
        bar.update(1)
        cider_score, cider_seg = cider(tok_hyps, tok_refs)
        bar.update(1)
        meteor_score: float | None = None
        segments = {"ROUGE_L": rouge_seg, "CIDEr": cider_seg}
        if scorer is not None:
            meteor_score, segments["METEOR"] = scorer.score(tok_hyps, tok_refs)
        bar.update(1)
    finally:
        bar.close()
        if own_meteor is not None:
            own_meteor.close()
    return E2EScores(
        BLEU=bleu,
        NIST=nist,
        METEOR=meteor_score,
        ROUGE_L=rouge,
        CIDEr=cider_score,
        n_instances=len(refs),
        n_references=n_refs,
        tokenizer=f"ptb-{backend}",
        meteor_error=meteor_error if meteor_score is None else None,
        segments=segments,
    )


def _fix_mojibake(text: str) -> str:
    for bad, good in _MOJIBAKE_FIXES:
        text = text.replace(bad, good)
    return text


def read_references(
    path: str | os.PathLike[str], fmt: Literal["auto", "csv", "lora", "lines"] = "auto"
) -> list[list[str]]:
    """Multi-reference instances from a reference file (see the module docstring for the formats)."""
    path = Path(path)
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() in (".csv", ".tsv") else "lines"
        if fmt == "lines" and "||" in read_text(path).split("\n", 1)[0]:
            fmt = "lora"
    if fmt == "csv":
        records = parse_e2e_csv(_fix_mojibake(read_text(path)), str(path))
        return [list(inst.refs) for inst in group_references(records, "consecutive")]
    if fmt == "lora":
        return [list(inst.refs) for inst in group_references(read_lora_file(path), "consecutive")]
    if fmt == "lines":
        groups: list[list[str]] = [[]]
        for line in read_text(path).split("\n"):
            line = line.strip()
            if line:
                groups[-1].append(line)
            elif groups[-1]:
                groups.append([])
        groups = [g for g in groups if g]
        if not groups:
            raise DataError(f"{path}: line 1: empty reference file")
        return [[r] for r in groups[0]] if len(groups) == 1 else groups
    raise ValueError(f"unknown reference format {fmt!r}")


def read_predictions(path: str | os.PathLike[str], expected: int | None = None, refs_name: str = "") -> list[str]:
    """System outputs, one per line (a final newline does not start an extra empty prediction).

    With ``expected`` (the number of MR instances), a different line count raises a :class:`DataError` naming the
    first line that is missing or extra.
    """
    text = read_text(path)
    if not text:
        raise DataError(f"{path}: line 1: empty prediction file (expected one output per MR)")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [line.rstrip("\r").strip() for line in lines]
    if expected is not None and len(lines) != expected:
        against = f" ({refs_name} has {expected} MRs)" if refs_name else f" ({expected} expected)"
        if len(lines) > expected:
            problem = f"line {expected + 1}: {len(lines) - expected} prediction line(s) more than MRs{against}"
        else:
            problem = f"line {len(lines) + 1}: file ends after {len(lines)} predictions, {expected - len(lines)} missing{against}"
        raise DataError(f"{path}: {problem}; the file needs exactly one line per MR, in reference order")
    return lines


def evaluate_e2e(
    refs_path: str | os.PathLike[str],
    pred_path: str | os.PathLike[str],
    *,
    refs_format: Literal["auto", "csv", "lora", "lines"] = "auto",
    tokenizer: str | None = None,
    meteor: MeteorMode = "auto",
    progress: bool = False,
) -> E2EScores:
    """Score a prediction file against a reference file (what ``peftlab evaluate e2e`` runs)."""
    refs = read_references(refs_path, refs_format)
    hyps = read_predictions(pred_path, expected=len(refs), refs_name=str(refs_path))
    return score_e2e(hyps, refs, tokenizer=tokenizer, meteor=meteor, progress=progress)
