"""GLUE loader on the real TSVs in ../shared/data/glue (row and label counts from the per-task SOURCE.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

from peftlab.data import GLUE_TASKS, SubsetSpec, get_task, load_glue, parse_glue_tsv
from peftlab.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

EXPECTED = {  # (task, split): (rows, label counts by name or None for regression)
    ("CoLA", "train"): (8551, {"unacceptable": 2528, "acceptable": 6023}),
    ("CoLA", "dev"): (1043, {"unacceptable": 322, "acceptable": 721}),
    ("SST-2", "train"): (67349, {"negative": 29780, "positive": 37569}),
    ("SST-2", "dev"): (872, {"negative": 428, "positive": 444}),
    ("MRPC", "train"): (3668, {"not_equivalent": 1194, "equivalent": 2474}),
    ("MRPC", "dev"): (408, {"not_equivalent": 129, "equivalent": 279}),
    ("RTE", "train"): (2490, {"entailment": 1249, "not_entailment": 1241}),
    ("RTE", "dev"): (277, {"entailment": 146, "not_entailment": 131}),
    ("STS-B", "train"): (5749, None),
    ("STS-B", "dev"): (1500, None),
    ("QNLI", "dev"): (5463, {"entailment": 2702, "not_entailment": 2761}),
    ("WNLI", "train"): (635, {"not_entailment": 323, "entailment": 312}),
    ("WNLI", "dev"): (71, {"not_entailment": 40, "entailment": 31}),
}


@pytest.fixture(scope="module")
def shared_data_dir() -> Path:
    if not (SHARED / "glue" / "RTE" / "dev.tsv").is_file():
        pytest.fail(f"shared data not found at {SHARED} (the repository must sit beside shared/)")
    return SHARED


@pytest.mark.parametrize("task,split", list(EXPECTED))
def test_counts_and_labels(shared_data_dir: Path, task: str, split: str) -> None:
    rows, labels = EXPECTED[(task, split)]
    data = load_glue(task, split, shared_data_dir)
    assert len(data.examples) == rows
    if labels is None:
        scores = [e.label for e in data.examples]
        assert min(scores) == 0.0 and max(scores) == 5.0 and data.task.task_type == "regression"
    else:
        assert data.label_counts == labels
    assert all(e.text_a for e in data.examples)
    assert all((e.text_b is not None) == (len(data.task.text_columns) == 2) for e in data.examples)


def test_task_declarations() -> None:
    assert set(GLUE_TASKS) == {"CoLA", "SST-2", "MRPC", "RTE", "STS-B", "QNLI", "WNLI"}
    assert get_task("sst2") is get_task("SST-2") is get_task("sst-2")
    assert get_task("stsb").task_type == "regression" and get_task("stsb").num_labels == 1
    assert get_task("cola").metrics == ("matthews_correlation", "accuracy")
    assert get_task("mrpc").metrics == ("f1", "accuracy")
    assert get_task("rte").label_names == ("entailment", "not_entailment")  # Hugging Face label ids
    with pytest.raises(DataError, match="unknown GLUE task"):
        get_task("MNLI")


def test_specific_rows(shared_data_dir: Path) -> None:
    mrpc = load_glue("MRPC", "dev", shared_data_dir)  # header starts with a BOM
    assert mrpc.examples[0].label in (0, 1) and mrpc.examples[0].line == 2
    cola = load_glue("cola", "dev", shared_data_dir)  # no header
    assert cola.examples[0].text_a == "The sailors rode the breeze clear of the rocks." and cola.examples[0].label == 1
    stsb = load_glue("STS-B", "dev", shared_data_dir)
    assert isinstance(stsb.examples[0].label, float) and stsb.examples[0].text_b
    # the data dir may also be the glue folder itself
    assert len(load_glue("WNLI", "dev", shared_data_dir / "glue").examples) == 71


def test_subsets(shared_data_dir: Path) -> None:
    dev = load_glue("SST-2", "dev", shared_data_dir)
    sub = dev.take(SubsetSpec(100, "stratified", seed=3))
    assert sub.label_counts == {"negative": 49, "positive": 51}  # 428/872 and 444/872 of 100
    again = load_glue("SST-2", "dev", shared_data_dir, subset=SubsetSpec(100, "stratified", seed=3))
    assert [e.guid for e in again.examples] == [e.guid for e in sub.examples]
    meta = again.metadata()
    assert meta["subset"]["seed"] == 3 and meta["subset"]["n"] == 100 and meta["subset"]["n_total"] == 872
    assert [e.line for e in dev.take(SubsetSpec(5)).examples] == [2, 3, 4, 5, 6]
    assert len(load_glue("STS-B", "dev", shared_data_dir).take(SubsetSpec(30, "stratified", 0)).examples) == 30


def test_bad_tsv_inputs(tmp_path: Path, shared_data_dir: Path) -> None:
    rte = get_task("RTE")
    good = "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n"
    assert len(parse_glue_tsv(good, "ok.tsv", rte)) == 1
    with pytest.raises(DataError, match=r"rte\.tsv: line 3: expected 4 tab-separated columns for RTE, found 3"):
        parse_glue_tsv(good + "1\tA.\tentailment\n", "rte.tsv", rte)
    with pytest.raises(DataError, match=r"rte\.tsv: line 2: label 'yes' is not one of"):
        parse_glue_tsv(good.replace("entailment\n", "yes\n"), "rte.tsv", rte)
    with pytest.raises(DataError, match=r"e\.tsv: line 1: empty file"):
        parse_glue_tsv("", "e.tsv", rte)
    with pytest.raises(DataError, match=r"s\.tsv: line 2: score 'high' is not a number"):
        parse_glue_tsv("h\t" * 9 + "h\n" + "0\t" * 9 + "high\n", "s.tsv", get_task("STS-B"))
    folder = tmp_path / "glue" / "CoLA"
    folder.mkdir(parents=True)
    (folder / "dev.tsv").write_bytes(b"gj04\t1\t\tFine.\ngj04\t0\t*\tBad \xff.\n")
    with pytest.raises(DataError, match=r"dev\.tsv: line 2: not valid UTF-8"):
        load_glue("CoLA", "dev", tmp_path)
    with pytest.raises(DataError, match=r"QNLI/train\.tsv: file not found"):
        load_glue("QNLI", "train", shared_data_dir)
    with pytest.raises(DataError, match="test labels are not public"):
        load_glue("RTE", "test", shared_data_dir)


def test_stsb_scores_outside_zero_to_five_are_refused(tmp_path):
    from peftlab.data.glue import get_task, parse_glue_tsv

    task = get_task("stsb")
    header = "\t".join(f"c{i}" for i in range(10))
    row = "\t".join(["0", "g", "f", "y", "1", "2", "3", "a man plays", "a man sings", "9.5"])
    with pytest.raises(DataError, match=r"line 2: score '9.5' is outside STS-B's range \[0, 5\]"):
        parse_glue_tsv(header + "\n" + row + "\n", "dev.tsv", task)
    with pytest.raises(DataError, match=r"line 2: score 'nan' is outside"):
        parse_glue_tsv(header + "\n" + row.replace("9.5", "nan") + "\n", "dev.tsv", task)
