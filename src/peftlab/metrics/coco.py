"""ROUGE-L, CIDEr and METEOR as computed by the COCO caption code inside the official E2E scorer.

All three take *PTB-tokenized* captions (see :mod:`peftlab.metrics.ptb`): lowercased, punctuation tokens removed,
tokens joined by single spaces.

ROUGE-L (:func:`rouge_l`): per segment, for each reference the longest common subsequence (LCS) of the
hypothesis and reference tokens (captions split on single spaces) gives ``P = LCS / |hyp|`` and
``R = LCS / |ref|``; the segment score is the F-measure ``(1 + b^2) P R / (R + b^2 P)`` with ``b = 1.2`` computed
from the *maximum* P and the *maximum* R over references (0 if either is 0). The corpus score is the mean.

CIDEr (:func:`cider`, the COCO "CIDEr-D" variant with sigma = 6): for n = 1..4 every caption is a TF-IDF vector of
its n-grams, ``tf * (log(N) - log(max(1, df)))`` with ``N`` the number of segments and ``df`` the number of
segments whose references contain the n-gram. Per reference, the similarity for each n is
``sum_g min(h_g, r_g) * r_g / (|h| |r|)`` (clipped cosine; the un-normalised sum when a norm is 0), times a
Gaussian length penalty ``exp(-(l_h - l_r)^2 / (2 sigma^2))``, where -- as in the COCO code -- the "length" is the
number of *bigrams* of the caption. The segment score is ``10 * mean_n(sum over refs) / n_refs``; the corpus
score is the mean over segments.

METEOR (:class:`Meteor`): the official METEOR 1.5 jar (``meteor-1.5.jar`` with ``paraphrase-en.gz``, shipped in
the ``pycocoevalcap`` wheel), run as ``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm``. Each segment's
statistics come from a ``SCORE ||| ref_1 ||| ... ||| hyp`` request; one ``EVAL ||| stats_1 ||| ...`` request
then returns the segment scores and the corpus score (computed from the pooled statistics, not the mean of the
segment scores). Needs Java; without it :class:`MetricUnavailableError` explains what is missing.
"""
from __future__ import annotations

import math
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from ..errors import PeftlabError
from .ptb import find_pycocoevalcap_file, java_available

__all__ = ["Meteor", "MetricUnavailableError", "cider", "meteor", "meteor_unavailable_reason", "rouge_l"]


class MetricUnavailableError(PeftlabError, RuntimeError):
    """A metric cannot be computed in this environment (e.g. METEOR without Java); the message says what to install."""


# ---------------------------------------------------------------------------------------------------- ROUGE-L
def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (bit-parallel algorithm of Allison & Dix / Hyyro: one big-int
    update per token of ``b``; equal to the textbook dynamic programme)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l_segment(hyp: str, refs: Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L F-measure of one tokenized hypothesis against its tokenized references."""
    if not refs:
        raise ValueError("ROUGE-L needs at least one reference")
    hyp_toks = hyp.split(" ")
    precisions, recalls = [], []
    for ref in refs:
        ref_toks = ref.split(" ")
        lcs = _lcs_length(ref_toks, hyp_toks)
        precisions.append(lcs / len(hyp_toks))
        recalls.append(lcs / len(ref_toks))
    p, r = max(precisions), max(recalls)
    if p == 0 or r == 0:
        return 0.0
    return (1 + beta**2) * p * r / (r + beta**2 * p)


def rouge_l(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus ROUGE-L (mean of segment scores) and the segment scores."""
    scores = [rouge_l_segment(h, r) for h, r in zip(hyps, refs, strict=True)]
    return (sum(scores) / len(scores) if scores else 0.0), scores


# ---------------------------------------------------------------------------------------------------- CIDEr
def _ngram_counts(caption: str, max_n: int) -> Counter[tuple[str, ...]]:
    words = caption.split()
    counts: Counter[tuple[str, ...]] = Counter()
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            counts[tuple(words[i : i + n])] += 1
    return counts


@dataclass
class _TfIdf:
    vec: list[dict[tuple[str, ...], float]]
    norm: list[float]
    length: int


def cider(
    hyps: Sequence[str], refs: Sequence[Sequence[str]], max_n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """Corpus CIDEr(-D) as in the COCO caption code, and the segment scores."""
    hyp_counts = [_ngram_counts(h, max_n) for h in hyps]
    ref_counts = [[_ngram_counts(r, max_n) for r in seg] for seg in refs]
    if len(hyp_counts) != len(ref_counts):
        raise ValueError(f"{len(hyp_counts)} hypotheses but {len(ref_counts)} reference sets")
    doc_freq: Counter[tuple[str, ...]] = Counter()
    for seg in ref_counts:
        doc_freq.update({gram for counts in seg for gram in counts})
    log_n = math.log(float(len(ref_counts))) if ref_counts else 0.0

    def tfidf(counts: Counter[tuple[str, ...]]) -> _TfIdf:
        vec: list[dict[tuple[str, ...], float]] = [{} for _ in range(max_n)]
        norm = [0.0] * max_n
        length = 0
        for gram, tf in counts.items():
            n = len(gram) - 1
            value = float(tf) * (log_n - math.log(max(1.0, float(doc_freq.get(gram, 0)))))
            vec[n][gram] = value
            norm[n] += value * value
            if n == 1:  # the COCO code measures length in bigrams
                length += tf
        return _TfIdf(vec, [math.sqrt(x) for x in norm], length)

    scores: list[float] = []
    for h_counts, seg in zip(hyp_counts, ref_counts):
        h = tfidf(h_counts)
        total = [0.0] * max_n
        for r_counts in seg:
            r = tfidf(r_counts)
            penalty = math.exp(-((h.length - r.length) ** 2) / (2 * sigma**2))
            for n in range(max_n):
                val = sum(min(v, r.vec[n].get(g, 0.0)) * r.vec[n].get(g, 0.0) for g, v in h.vec[n].items())
                if h.norm[n] != 0 and r.norm[n] != 0:
                    val /= h.norm[n] * r.norm[n]
                total[n] += val * penalty
        scores.append(sum(total) / max_n / len(seg) * 10.0)
    return (sum(scores) / len(scores) if scores else 0.0), scores


# ---------------------------------------------------------------------------------------------------- METEOR
_METEOR_JAR = "meteor/meteor-1.5.jar"
_PARAPHRASE = "meteor/data/paraphrase-en.gz"


def meteor_unavailable_reason() -> str | None:
    """None when METEOR can run; otherwise a message naming what is missing and how to get it."""
    if java_available() is None:
        return (
            "METEOR needs a Java runtime (`java` on PATH), which was not found; install one "
            "(e.g. `apt-get install -y default-jre-headless`)"
        )
    if find_pycocoevalcap_file(_METEOR_JAR) is None or find_pycocoevalcap_file(_PARAPHRASE) is None:
        return "METEOR needs the METEOR 1.5 jar from the `pycocoevalcap` package (`pip install pycocoevalcap==1.2`)"
    return None


class Meteor:
    """A running METEOR 1.5 process (``-stdio`` protocol). Use as a context manager, or call :meth:`close`."""

    def __init__(self, max_memory: str = "2G") -> None:
        reason = meteor_unavailable_reason()
        if reason is not None:
            raise MetricUnavailableError(reason)
        jar = find_pycocoevalcap_file(_METEOR_JAR)
        assert jar is not None
        java = java_available()
        assert java is not None
        cmd = [java, "-Dfile.encoding=UTF-8", "-jar", f"-Xmx{max_memory}", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
        self._proc = subprocess.Popen(
            cmd, cwd=str(jar.parent), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._stderr: list[bytes] = []
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)

    def _request(self, line: str, n_replies: int = 1) -> list[str]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write((line + "\n").encode("utf-8"))
        self._proc.stdin.flush()
        replies = []
        for _ in range(n_replies):
            reply = self._proc.stdout.readline()
            if not reply:
                err = b"".join(self._stderr).decode("utf-8", "replace")[-800:]
                raise MetricUnavailableError(f"the METEOR process ended unexpectedly: {err}")
            replies.append(reply.decode("utf-8").strip())
        return replies

    def score(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
        """Corpus METEOR and segment scores of tokenized hypotheses against tokenized references."""
        if len(hyps) != len(refs):
            raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference sets")
        stats = []
        for hyp, seg_refs in zip(hyps, refs):
            hyp = hyp.replace("|||", "").replace("  ", " ")
            stats.append(self._request(" ||| ".join(["SCORE", " ||| ".join(seg_refs), hyp]))[0])
        replies = self._request(" ||| ".join(["EVAL", *stats]), n_replies=len(stats) + 1)
        return float(replies[-1]), [float(x) for x in replies[:-1]]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> "Meteor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def meteor(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus METEOR 1.5 (official jar) and segment scores; raises :class:`MetricUnavailableError` without Java."""
    with Meteor() as scorer:
        return scorer.score(hyps, refs)
