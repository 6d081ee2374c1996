"""A diagnostic of generated text, not an E2E metric: how many outputs repeat themselves.

Greedy decoding of a data-to-text model sometimes restates a slot ("... in the riverside area near Raja Indian
Cuisine. It is located near Raja Indian Cuisine."); the reference-based metrics punish that only indirectly. The
quality suite's decoding check (``benchmarks/quality/decoding_check.py``) counts such outputs under greedy decoding
and under beam search with n-gram blocking, so that a gap between two arms can be traced to it.
"""
from __future__ import annotations

from typing import Iterable


def has_repeated_ngram(text: str, n: int = 3) -> bool:
    """Whether some n-gram of ``text``'s white-space-separated words (case and punctuation kept) occurs twice."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = text.split()
    ngrams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(ngrams) != len(set(ngrams))


def outputs_with_repeated_ngram(texts: Iterable[str], n: int = 3) -> int:
    """How many of ``texts`` repeat one of their own word n-grams (:func:`has_repeated_ngram`)."""
    return sum(has_repeated_ngram(text, n) for text in texts)
