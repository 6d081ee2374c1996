"""Corpus BLEU and NIST with multiple references, as scored by the E2E challenge's Python MT-eval.

Definitions (mteval-v13a, in the form the official E2E scorer's ``-p`` mode computes them; this is the mode the
LoRA repository reports):

Tokenization (:func:`mteval_tokenize`): the "basic" mteval tokenizer. SGML entities ``&quot; &amp; &lt; &gt;``
are decoded, every ASCII punctuation character except ``. , ' -`` becomes its own token (apostrophes and hyphens
are kept inside words), a period or comma is split off unless it sits between digits, and a hyphen after a digit is
split off. Matching is case-insensitive (everything is lowercased).

BLEU: per segment, n-gram counts (n = 1..4) of the hypothesis are clipped by the *maximum* count of that n-gram in
any single reference; clipped hits and the hypothesis' n-gram totals (``len - n + 1``, not floored, as in the
official code) are summed over the corpus. The reference length of a segment is the length of the reference
closest to the hypothesis length (the shorter one on ties). ``BLEU = BP * exp(mean_n log(hits_n / total_n))`` with
``BP = exp(1 - ref_len / hyp_len)`` when ``hyp_len <= ref_len`` (zero counts are floored at 1e-15 / 1e-9 so that
the score stays defined).

NIST: the information weight of an n-gram w1..wn is ``log2(count(w1..wn-1) / count(w1..wn))``, with counts over
*all* reference segments of the corpus (every reference of every segment) and ``count()`` of the empty prefix =
the total number of reference words. Per segment, hypothesis n-grams (n = 1..5) are clipped against all references
as for BLEU; ``NIST = sum_n (sum of info of clipped hits_n) / (sum of hypothesis n-gram totals_n)``, times the
length penalty ``exp(-beta * log(min(1, L_hyp / L_ref))^2)`` with ``beta = -log(0.5) / log(1.5)^2`` (0.5 penalty at
a ratio of 2/3), where ``L_hyp`` is the total hypothesis length and ``L_ref`` the sum over segments of each
segment's *average* reference length. (The Perl mteval edited for E2E pads missing references with empty
segments instead; that is what makes the Perl and Python NIST differ for variable reference counts.)
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

__all__ = ["BLEUAccumulator", "NISTAccumulator", "corpus_bleu", "corpus_nist", "mteval_tokenize"]

_PUNCT = re.compile(r"([{-~\[-` -&(-+:-@/])")
_PERIOD_COMMA_AFTER = re.compile(r"([^0-9])([.,])")
_PERIOD_COMMA_BEFORE = re.compile(r"([.,])([^0-9])")
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")
_SPACES = re.compile(r"\s+")


def mteval_tokenize(text: str) -> list[str]:
    """mteval-v13a "basic" tokenization (case preserved; an empty text gives ``['']`` like the official code)."""
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    text = f" {text} "
    text = _PUNCT.sub(r" \1 ", text)
    text = _PERIOD_COMMA_AFTER.sub(r"\1 \2 ", text)
    text = _PERIOD_COMMA_BEFORE.sub(r" \1 \2", text)
    text = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", text)
    return _SPACES.sub(" ", text).strip().split(" ")


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _max_ref_counts(refs: Sequence[Sequence[str]], n: int) -> dict[tuple[str, ...], int]:
    merged: dict[tuple[str, ...], int] = {}
    for ref in refs:
        for gram, count in _ngrams(ref, n).items():
            if count > merged.get(gram, 0):
                merged[gram] = count
    return merged


def _prepare(hyp: str | Sequence[str], refs: Sequence[str | Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    def tok(x: str | Sequence[str]) -> list[str]:
        return [t.lower() for t in (mteval_tokenize(x) if isinstance(x, str) else x)]

    if not refs:
        raise ValueError("every segment needs at least one reference")
    return tok(hyp), [tok(r) for r in refs]


@dataclass
class BLEUAccumulator:
    """Accumulates BLEU statistics segment by segment (``add``), then ``score()`` gives corpus BLEU in [0, 1]."""

    max_n: int = 4
    hits: list[int] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)
    hyp_len: int = 0
    ref_len: int = 0

    def __post_init__(self) -> None:
        self.hits = self.hits or [0] * self.max_n
        self.totals = self.totals or [0] * self.max_n

    def add(self, hyp: str | Sequence[str], refs: Sequence[str | Sequence[str]]) -> None:
        hyp_toks, ref_toks = _prepare(hyp, refs)
        for n in range(1, self.max_n + 1):
            max_ref = _max_ref_counts(ref_toks, n)
            self.hits[n - 1] += sum(min(c, max_ref.get(g, 0)) for g, c in _ngrams(hyp_toks, n).items())
            self.totals[n - 1] += len(hyp_toks) - n + 1
        self.hyp_len += len(hyp_toks)
        self.ref_len += len(min(ref_toks, key=lambda r: (abs(len(r) - len(hyp_toks)), len(r))))

    def score(self) -> float:
        log_prec = sum(math.log(max(h, 1e-15) / max(t, 1e-9)) for h, t in zip(self.hits, self.totals))
        bp = 1.0
        if self.totals[0] <= self.ref_len:
            bp = math.exp(1.0 - self.ref_len / (self.totals[0] if self.totals[0] else 1e-5))
        return bp * math.exp(log_prec / self.max_n)


_NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2


@dataclass
class NISTAccumulator:
    """Accumulates NIST statistics; information weights need the whole corpus, so ``score()`` computes them last."""

    max_n: int = 5
    ref_counts: list[Counter[tuple[str, ...]]] = field(default_factory=list)
    hit_grams: list[Counter[tuple[str, ...]]] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)
    avg_ref_len: float = 0.0

    def __post_init__(self) -> None:
        self.ref_counts = self.ref_counts or [Counter() for _ in range(self.max_n + 1)]
        self.hit_grams = self.hit_grams or [Counter() for _ in range(self.max_n)]
        self.totals = self.totals or [0] * self.max_n

    def add(self, hyp: str | Sequence[str], refs: Sequence[str | Sequence[str]]) -> None:
        hyp_toks, ref_toks = _prepare(hyp, refs)
        for n in range(1, self.max_n + 1):
            max_ref = _max_ref_counts(ref_toks, n)
            for gram, count in _ngrams(hyp_toks, n).items():
                hits = min(count, max_ref.get(gram, 0))
                if hits:
                    self.hit_grams[n - 1][gram] += hits
            self.totals[n - 1] += len(hyp_toks) - n + 1
            for ref in ref_toks:
                self.ref_counts[n].update(_ngrams(ref, n))
        ref_words = sum(len(r) for r in ref_toks)
        self.ref_counts[0][()] += ref_words
        self.avg_ref_len += ref_words / len(ref_toks)

    def info(self, gram: tuple[str, ...]) -> float:
        """Information weight of an n-gram (0 for an n-gram absent from the references)."""
        count = self.ref_counts[len(gram)].get(gram, 0)
        if not count:
            return 0.0
        return math.log2(self.ref_counts[len(gram) - 1][gram[:-1]] / count)

    def score(self) -> float:
        total = 0.0
        for n in range(self.max_n):
            info_sum = sum(self.info(g) * c for g, c in self.hit_grams[n].items())
            total += info_sum / (self.totals[n] if self.totals[n] else 1)
        ratio = self.totals[0] / self.avg_ref_len if self.avg_ref_len else 0.0
        if ratio >= 1:
            penalty = 1.0
        elif ratio <= 0:
            penalty = 0.0
        else:
            penalty = math.exp(-_NIST_BETA * math.log(ratio) ** 2)
        return total * penalty


def corpus_bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0..1) of ``hyps[i]`` against the references ``refs[i]``."""
    acc = BLEUAccumulator()
    for hyp, seg_refs in zip(hyps, refs, strict=True):
        acc.add(hyp, seg_refs)
    return acc.score()


def corpus_nist(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Corpus NIST (5-gram) of ``hyps[i]`` against the references ``refs[i]``."""
    acc = NISTAccumulator()
    for hyp, seg_refs in zip(hyps, refs, strict=True):
        acc.add(hyp, seg_refs)
    return acc.score()
