"""Corpus BLEU and NIST with multiple references, as scored by the E2E challenge's Python MT-eval (``-p`` mode).

Both use the mteval-v13a "basic" tokenization (sacrebleu's ``13a`` tokenizer, which is that tokenizer) and are
case-insensitive (everything is lowercased).

BLEU (:func:`corpus_bleu`) is sacrebleu's corpus BLEU (``tokenize="13a"``, ``lowercase=True``) with every
reference of a segment: n-gram counts clipped by the maximum count in any single reference, the closest reference
length (the shorter one on ties), and the usual brevity penalty. It equals the official ``-p`` scorer to float
precision (about 4e-16 on the metric-check fixtures) for every hypothesis of at least 4 tokens. Shorter
hypotheses differ slightly: the official code counts ``len - n + 1`` n-grams *without* flooring at 0 (an empty
hypothesis even counts as one empty token), sacrebleu floors at 0; with five of the 630 template outputs cut to 2
tokens (one of them empty) the two BLEUs differ by 5e-5.

NIST (:func:`corpus_nist`; no package reproduces mteval's, so this one is ours): the information weight of an
n-gram w1..wn is ``log2(count(w1..wn-1) / count(w1..wn))``, with counts over *all* reference segments of the
corpus (every reference of every segment) and ``count()`` of the empty prefix = the total number of reference
words. Per segment, hypothesis n-grams (n = 1..5) are clipped against all references as for BLEU;
``NIST = sum_n (sum of info of clipped hits_n) / (sum of hypothesis n-gram totals_n)``, times the length penalty
``exp(-beta * log(min(1, L_hyp / L_ref))^2)`` with ``beta = -log(0.5) / log(1.5)^2`` (0.5 penalty at a ratio of
2/3), where ``L_hyp`` is the total hypothesis length and ``L_ref`` the sum over segments of each segment's *average*
reference length. (The Perl mteval edited for E2E pads missing references with empty segments instead; that is
what makes the Perl and Python NIST differ for variable reference counts.) nltk's NIST keeps only the single best
reference per segment and gives 6.41 instead of the official 7.64 on the template fixture.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Sequence

from .._optional import require

__all__ = ["corpus_bleu", "corpus_nist", "mteval_tokenize"]

_NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2
_TOKENIZER: Callable[[str], str] | None = None


def mteval_tokenize(text: str) -> list[str]:
    """mteval-v13a "basic" tokenization (case preserved; an empty text gives ``['']`` like the official code)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = require("sacrebleu.tokenizers.tokenizer_13a", "metrics", "BLEU/NIST tokenization",
                             package="sacrebleu").Tokenizer13a()
    return _TOKENIZER(text).split(" ")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0..1) of ``hyps[i]`` against the references ``refs[i]`` (sacrebleu, 13a, lowercased)."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference sets")
    if any(not seg for seg in refs):
        raise ValueError("every segment needs at least one reference")
    if not hyps:
        return 0.0
    bleu = require("sacrebleu.metrics.bleu", "metrics", "BLEU", package="sacrebleu")
    # sacrebleu takes reference *streams* (the k-th reference of every segment); None marks a missing one
    streams = [[seg[k] if k < len(seg) else None for seg in refs] for k in range(max(len(seg) for seg in refs))]
    scorer = bleu.BLEU(tokenize="13a", lowercase=True, force=True)  # force: no "looks tokenized" warning
    return scorer.corpus_score(list(hyps), streams).score / 100.0


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_nist(hyps: Sequence[str], refs: Sequence[Sequence[str]], max_n: int = 5) -> float:
    """Corpus NIST (5-gram) of ``hyps[i]`` against the references ``refs[i]``, as the official ``-p`` scorer."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference sets")
    ref_counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(max_n + 1)]  # [0][()] = ref words
    hit_grams: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(max_n)]
    totals = [0] * max_n
    avg_ref_len = 0.0
    for hyp, seg_refs in zip(hyps, refs):
        if not seg_refs:
            raise ValueError("every segment needs at least one reference")
        hyp_toks = [t.lower() for t in mteval_tokenize(hyp)]
        ref_toks = [[t.lower() for t in mteval_tokenize(r)] for r in seg_refs]
        for n in range(1, max_n + 1):
            ref_grams = [_ngrams(r, n) for r in ref_toks]
            max_ref: Counter[tuple[str, ...]] = Counter()
            for grams in ref_grams:
                max_ref |= grams  # element-wise maximum
                ref_counts[n].update(grams)
            hit_grams[n - 1].update(_ngrams(hyp_toks, n) & max_ref)  # clipped hits
            totals[n - 1] += len(hyp_toks) - n + 1  # not floored at 0, as in the official code
        ref_words = sum(len(r) for r in ref_toks)
        ref_counts[0][()] += ref_words
        avg_ref_len += ref_words / len(ref_toks)

    def info(gram: tuple[str, ...]) -> float:
        return math.log2(ref_counts[len(gram) - 1][gram[:-1]] / ref_counts[len(gram)][gram])

    score = sum(sum(info(g) * c for g, c in hit_grams[n].items()) / (totals[n] or 1) for n in range(max_n))
    ratio = totals[0] / avg_ref_len if avg_ref_len else 0.0
    if ratio >= 1:
        return score
    return score * math.exp(-_NIST_BETA * math.log(ratio) ** 2) if ratio > 0 else 0.0
