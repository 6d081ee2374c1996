"""ROUGE-L, CIDEr and METEOR as computed by the COCO caption code inside the official E2E scorer.

All three take *PTB-tokenized* captions (see :mod:`peftlab.metrics.ptb`): lowercased, punctuation tokens removed,
tokens joined by single spaces.

ROUGE-L (:func:`rouge_l`) and CIDEr (:func:`cider`) are the ``Rouge`` and ``Cider`` scorers of ``pycocoevalcap``
(the ``metrics`` extra), which is the COCO caption code the official scorer bundles: they give the official numbers
exactly. ROUGE-L: per segment the LCS F-measure with beta 1.2 from the maximum precision and the maximum recall
over the references, averaged over segments. CIDEr is CIDEr-D: n = 1..4, TF-IDF with document frequencies over the
references, clipped cosine, Gaussian length penalty with sigma 6 on the *bigram* counts, times 10.

METEOR (:class:`Meteor`): the official METEOR 1.5 jar (``meteor-1.5.jar`` with ``paraphrase-en.gz``, shipped in
the ``pycocoevalcap`` wheel), run as ``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm``. Each segment's
statistics come from a ``SCORE ||| ref_1 ||| ... ||| hyp`` request; one ``EVAL ||| stats_1 ||| ...`` request
then returns the segment scores and the corpus score (computed from the pooled statistics, not the mean of the
segment scores). Needs Java; without it :class:`MetricUnavailableError` explains what is missing.
"""
from __future__ import annotations

import subprocess
import threading
from typing import Sequence

from .._optional import missing_message, require
from ..errors import PeftlabError
from .ptb import find_pycocoevalcap_file, java_available

__all__ = ["Meteor", "MetricUnavailableError", "cider", "meteor", "meteor_unavailable_reason", "rouge_l"]


class MetricUnavailableError(PeftlabError, RuntimeError):
    """A metric cannot be computed in this environment (e.g. METEOR without Java); the message says what to install."""


def _coco_score(
    name: str, module: str, class_name: str, hyps: Sequence[str], refs: Sequence[Sequence[str]]
) -> tuple[float, list[float]]:
    """Run the pycocoevalcap scorer ``module.class_name`` on tokenized captions: corpus and segment scores."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference sets")
    if any(not seg for seg in refs):
        raise ValueError(f"{name} needs at least one reference per segment")
    scorer_cls = getattr(require(module, "metrics", name, package="pycocoevalcap"), class_name)
    if not hyps:
        return 0.0, []
    gts = {i: list(seg) for i, seg in enumerate(refs)}
    res = {i: [hyp] for i, hyp in enumerate(hyps)}
    score, segments = scorer_cls().compute_score(gts, res)
    return float(score), [float(x) for x in segments]


def rouge_l(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus ROUGE-L (mean of segment scores) and the segment scores (pycocoevalcap's ``Rouge``)."""
    return _coco_score("ROUGE-L", "pycocoevalcap.rouge.rouge", "Rouge", hyps, refs)


def cider(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus CIDEr(-D) and the segment scores (pycocoevalcap's ``Cider``; n = 1..4, sigma = 6)."""
    return _coco_score("CIDEr", "pycocoevalcap.cider.cider", "Cider", hyps, refs)


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
        return missing_message("the METEOR 1.5 jar of pycocoevalcap", "metrics", "METEOR")
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
