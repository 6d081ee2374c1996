"""Evaluation metrics: the official E2E scorer's five metrics and the GLUE metrics.

``peftlab.metrics.e2e`` (:func:`score_e2e`, :func:`evaluate_e2e`) equals ``tuetschek/e2e-metrics``; the building
blocks live in :mod:`.bleu_nist` (BLEU through sacrebleu, our NIST), :mod:`.ptb` (PTB tokenization: the official
jar, or the opt-in Python port), :mod:`.coco` (ROUGE-L and CIDEr through pycocoevalcap, METEOR 1.5). The E2E
metrics need the ``metrics`` extra (``pip install 'peftlab[metrics]'``), imported only when scoring.
``peftlab.metrics.glue`` has accuracy, F1, Matthews, Pearson and Spearman (no extra needed);
``peftlab.metrics.repetition`` counts outputs that repeat one of their own n-grams (a diagnostic, no extra).
"""
from __future__ import annotations

from .bleu_nist import corpus_bleu, corpus_nist, mteval_tokenize
from .coco import Meteor, MetricUnavailableError, cider, meteor_unavailable_reason, rouge_l
from .e2e import E2E_METRICS, E2EScores, evaluate_e2e, read_predictions, read_references, score_e2e
from .glue import accuracy, binary_f1, glue_metrics, matthews_corrcoef, pearson, spearman
from .ptb import PTBLexer, TokenizerUnavailableError, coco_tokenize
from .repetition import has_repeated_ngram, outputs_with_repeated_ngram

__all__ = [
    "E2E_METRICS",
    "E2EScores",
    "Meteor",
    "MetricUnavailableError",
    "PTBLexer",
    "TokenizerUnavailableError",
    "accuracy",
    "binary_f1",
    "cider",
    "coco_tokenize",
    "corpus_bleu",
    "corpus_nist",
    "evaluate_e2e",
    "glue_metrics",
    "has_repeated_ngram",
    "matthews_corrcoef",
    "meteor_unavailable_reason",
    "mteval_tokenize",
    "outputs_with_repeated_ngram",
    "pearson",
    "read_predictions",
    "read_references",
    "rouge_l",
    "score_e2e",
    "spearman",
]
