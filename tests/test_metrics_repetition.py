"""peftlab.metrics.repetition: outputs that repeat one of their own word n-grams (a diagnostic of decoding)."""
from __future__ import annotations

import pytest

from peftlab.metrics import has_repeated_ngram, outputs_with_repeated_ngram

RESTATED = ("The Mill is a family friendly pub in the riverside area near Raja Indian Cuisine. It is located near Raja "
            "Indian Cuisine.")
PLAIN = "The Mill is a family friendly pub in the riverside area near Raja Indian Cuisine."


def test_a_restated_slot_is_a_repeated_trigram_and_a_plain_output_is_not():
    assert has_repeated_ngram(RESTATED)  # "near Raja Indian" twice
    assert not has_repeated_ngram(PLAIN)
    assert not has_repeated_ngram("")
    assert not has_repeated_ngram("near Raja")  # shorter than n


def test_words_are_compared_as_written_and_n_sets_the_span():
    assert not has_repeated_ngram("It is near. it is near")  # "It" and "it" differ
    assert not has_repeated_ngram("is near it is near")  # "is near" twice, but no 3-gram twice
    assert has_repeated_ngram("is near it is near", n=2)
    assert has_repeated_ngram("near it is near it is") and not has_repeated_ngram("near it is near it is.")
    assert has_repeated_ngram("a b a b", n=2) and not has_repeated_ngram("a b a b", n=3)
    assert has_repeated_ngram("a a", n=1)
    with pytest.raises(ValueError, match="n must be >= 1"):
        has_repeated_ngram("a b", n=0)


def test_outputs_are_counted_once_however_often_they_repeat():
    assert outputs_with_repeated_ngram([RESTATED, PLAIN, RESTATED + " " + RESTATED]) == 2
    assert outputs_with_repeated_ngram(iter([PLAIN])) == 0
    assert outputs_with_repeated_ngram([]) == 0
