"""GLUE metrics: hand-checked values, independent formulas, and the CLI on the real dev sets."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from peftlab.cli import main as cli_main
from peftlab.data import load_glue
from peftlab.errors import DataError
from peftlab.metrics.glue import (
    accuracy,
    binary_f1,
    glue_metrics,
    matthews_corrcoef,
    pearson,
    read_glue_predictions,
    spearman,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def shared_data_dir() -> Path:
    if not (SHARED / "glue" / "MRPC" / "dev.tsv").is_file():
        pytest.fail(f"shared data not found at {SHARED} (the repository must sit beside shared/)")
    return SHARED


def test_classification_metrics_by_hand() -> None:
    pred = [1, 1, 0, 0, 1, 0, 1, 1]
    gold = [1, 0, 0, 1, 1, 0, 1, 0]
    # TP=3 TN=2 FP=2 FN=1
    assert accuracy(pred, gold) == 5 / 8
    assert binary_f1(pred, gold) == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert matthews_corrcoef(pred, gold) == pytest.approx((3 * 2 - 2 * 1) / math.sqrt(5 * 4 * 4 * 3))
    assert matthews_corrcoef([1, 1, 1], [0, 1, 1]) == 0.0  # undefined -> 0
    assert binary_f1([0, 0], [0, 0]) == 0.0
    with pytest.raises(ValueError):
        accuracy([1, 0], [1])


def test_correlations_against_independent_formulas() -> None:
    rng = random.Random(0)
    x = [rng.random() * 5 for _ in range(200)]
    y = [v + rng.gauss(0, 1) for v in x]
    assert pearson(x, y) == pytest.approx(float(np.corrcoef(x, y)[0, 1]), abs=1e-12)
    # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1))
    rx = {v: i for i, v in enumerate(sorted(x))}
    ry = {v: i for i, v in enumerate(sorted(y))}
    d2 = sum((rx[a] - ry[b]) ** 2 for a, b in zip(x, y))
    n = len(x)
    assert spearman(x, y) == pytest.approx(1 - 6 * d2 / (n * (n * n - 1)), abs=1e-12)
    # ties get average ranks: ranks of [1, 2, 2, 3] are [1, 2.5, 2.5, 4]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(
        float(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    )
    assert spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_task_metric_sets() -> None:
    assert set(glue_metrics("CoLA", [1, 0], [1, 0])) == {"matthews_correlation", "accuracy"}
    assert set(glue_metrics("MRPC", [1, 0], [1, 0])) == {"f1", "accuracy"}
    assert set(glue_metrics("STS-B", [1.0, 2.0, 3.0], [1.0, 2.5, 2.9])) == {"pearson", "spearman"}
    assert glue_metrics("RTE", [0, 1, 1], [0, 1, 0]) == {"accuracy": pytest.approx(2 / 3)}


def test_dev_set_baselines(shared_data_dir: Path) -> None:
    mrpc = load_glue("MRPC", "dev", shared_data_dir)
    gold = [e.label for e in mrpc.examples]
    all_pos = glue_metrics("MRPC", [1] * len(gold), gold)
    assert all_pos["accuracy"] == pytest.approx(279 / 408)
    assert all_pos["f1"] == pytest.approx(2 * 279 / (2 * 279 + 129))
    cola = load_glue("CoLA", "dev", shared_data_dir)
    assert glue_metrics("CoLA", [1] * 1043, [e.label for e in cola.examples])["matthews_correlation"] == 0.0
    stsb = load_glue("STS-B", "dev", shared_data_dir)
    scores = [e.label for e in stsb.examples]
    assert glue_metrics("STS-B", scores, scores) == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0)}


def test_cli_glue(shared_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rte = load_glue("RTE", "dev", shared_data_dir)
    pred = tmp_path / "rte.txt"
    names = ["entailment"] * 100 + [str(e.label) for e in rte.examples[100:]]  # names or ids both accepted
    pred.write_text("\n".join(names) + "\n", encoding="utf-8")
    assert cli_main(["evaluate", "glue", "--task", "rte", "--pred", str(pred), "--data-dir", str(shared_data_dir),
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = (sum(e.label == 0 for e in rte.examples[:100]) + 177) / 277
    assert out["task"] == "RTE" and out["n"] == 277 and out["accuracy"] == pytest.approx(expected)
    pred.write_text("entailment\n" * 276, encoding="utf-8")
    with pytest.raises(DataError, match=r"rte\.txt: line 277: 276 predictions for 277 examples"):
        read_glue_predictions(pred, rte)
    pred.write_text("entailment\n" * 100 + "maybe\n" + "entailment\n" * 176, encoding="utf-8")
    assert cli_main(["evaluate", "glue", "--task", "rte", "--pred", str(pred), "--data-dir", str(shared_data_dir)]) == 1
    assert "rte.txt: line 101: prediction 'maybe' is not a label of RTE" in capsys.readouterr().err
