"""E2E loader on the real release files in ../shared/data/e2e (counts from its SOURCE.md)."""
from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest

from peftlab.data import (
    DATA_DIR_ENV,
    MRFormat,
    SubsetSpec,
    default_data_dir,
    group_references,
    linearize_mr,
    load_e2e,
    parse_e2e_csv,
    parse_mr,
    read_e2e_csv,
    read_lora_file,
)
from peftlab.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def shared_data_dir() -> Path:
    if not (SHARED / "e2e" / "devset.csv").is_file():
        pytest.fail(f"shared data not found at {SHARED} (the repository must sit beside shared/)")
    return SHARED


@pytest.fixture(scope="module")
def test_split(shared_data_dir: Path):
    return load_e2e("test", shared_data_dir)


def test_split_counts(shared_data_dir: Path, test_split) -> None:
    train = load_e2e("train", shared_data_dir)
    dev = load_e2e("dev", shared_data_dir)
    assert (len(train.records), len(train.instances)) == (42061, 4862)
    assert (len(dev.records), len(dev.instances)) == (4672, 547)
    assert (len(test_split.records), len(test_split.instances)) == (4693, 630)
    sizes = [len(i.refs) for i in test_split.instances]
    assert (min(sizes), max(sizes), sizes.count(1)) == (1, 45, 14)
    assert min(len(i.refs) for i in train.instances) == 2 and max(len(i.refs) for i in train.instances) == 46
    # the train set is shuffled: consecutive grouping would split MRs, "unique" is its default
    assert len(group_references(train.records, "consecutive")) > 4862
    # two train references contain a line break inside their quoted field
    assert sum("\n" in r.ref for r in train.records) == 2


def test_train_from_parts_equals_zip_and_original_bytes(shared_data_dir: Path, tmp_path: Path) -> None:
    e2e = shared_data_dir / "e2e"
    parts = b"".join((e2e / f"trainset.csv.part{i}of3").read_bytes() for i in (1, 2, 3))
    assert hashlib.sha256(parts).hexdigest() == "f27d48df45815288ab15619d47a79028c300fbb7f42e373668aba0b98c1d57c6"
    from_parts = load_e2e("train", shared_data_dir)
    assert "part1of3" in from_parts.source
    (tmp_path / "e2e").mkdir()
    shutil.copy(e2e / "e2e-dataset.zip", tmp_path / "e2e" / "e2e-dataset.zip")
    from_zip = load_e2e("train", tmp_path)
    assert from_zip.source.endswith("e2e-dataset.zip!e2e-dataset/trainset.csv")
    assert [(r.mr, r.ref) for r in from_zip.records] == [(r.mr, r.ref) for r in from_parts.records]
    (tmp_path / "e2e" / "trainset.csv").write_bytes(parts)
    assert load_e2e("train", tmp_path / "e2e").records[-1].ref == from_parts.records[-1].ref
    with open(e2e / "devset.csv", newline="", encoding="utf-8") as handle:  # an independent CSV parse agrees
        rows = list(csv.reader(handle))[1:]
    # fields are stripped of surrounding white space (one dev reference ends with a space)
    assert [(r.mr, r.ref) for r in load_e2e("dev", shared_data_dir).records] == [(m.strip(), r.strip()) for m, r in rows]


def test_grouping_matches_official_rule(test_split, shared_data_dir: Path) -> None:
    """Consecutive identical MRs = one instance, same order as testset.csv (the MR-only file)."""
    mrs_only = read_e2e_csv(shared_data_dir / "e2e" / "testset.csv", require_ref=False)
    assert [r.mr for r in mrs_only] == [i.mr for i in test_split.instances]
    lora = read_lora_file(shared_data_dir / "e2e" / "lora_format" / "test.txt")
    assert [len(i.refs) for i in group_references(lora)] == [len(i.refs) for i in test_split.instances]


@pytest.mark.parametrize("split,lora_file", [("test", "test.txt"), ("dev", "valid.txt")])
def test_lora_linearization_reproduces_lora_repo_contexts(shared_data_dir: Path, split: str, lora_file: str) -> None:
    data = load_e2e(split, shared_data_dir)
    lora = read_lora_file(shared_data_dir / "e2e" / "lora_format" / lora_file)
    assert [linearize_mr(r.mr, "lora") for r in data.records] == [r.mr for r in lora]


def test_mr_parsing_and_formats() -> None:
    mr = "name[The Eagle], eatType[coffee shop], priceRange[£20-25], near[Burger King]"
    assert parse_mr(mr) == [("name", "The Eagle"), ("eatType", "coffee shop"), ("priceRange", "£20-25"),
                            ("near", "Burger King")]
    assert linearize_mr(mr, "raw") == mr
    assert linearize_mr(mr) == "name : The Eagle | Type : coffee shop | price : £ 20 - 25 | near : Burger King"
    custom = MRFormat(pair="<{key}> {value}", separator=" ", key_names={"name": "NAME"})
    assert linearize_mr(mr, custom) == "<NAME> The Eagle <eatType> coffee shop <priceRange> £20-25 <near> Burger King"
    for bad in ("name[The Eagle", "name[A] eatType[pub]", ""):
        with pytest.raises(DataError):
            parse_mr(bad)
    with pytest.raises(ValueError, match="unknown MR format"):
        linearize_mr(mr, "nope")


def test_subsets_are_deterministic_and_recorded(test_split) -> None:
    first = test_split.take(SubsetSpec(50))
    assert len(first.instances) == 50 and len(first.records) == 322  # as metric_check's first50 case
    a = test_split.take(SubsetSpec(40, "random", seed=7))
    b = test_split.take(SubsetSpec(40, "random", seed=7))
    c = test_split.take(SubsetSpec(40, "random", seed=8))
    assert [i.mr for i in a.instances] == [i.mr for i in b.instances] != [i.mr for i in c.instances]
    meta = a.metadata()
    assert meta["subset"]["strategy"] == "random" and meta["subset"]["seed"] == 7 and meta["subset"]["n_total"] == 630
    assert meta["subset"]["indices_sha256"] == b.metadata()["subset"]["indices_sha256"]
    strat = test_split.take(SubsetSpec(63, "stratified", seed=1))
    counts = strat.subset.label_counts
    assert sum(counts.values()) == 63 and set(counts) <= {"coffee shop", "pub", "restaurant"}
    assert test_split.take(SubsetSpec(None)).metadata()["subset"]["strategy"] == "all"


def test_data_dir_resolution(shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(DataError, match="--data-dir"):
        default_data_dir()
    with pytest.raises(DataError, match=DATA_DIR_ENV):
        load_e2e("test")
    monkeypatch.setenv(DATA_DIR_ENV, str(shared_data_dir))
    assert len(load_e2e("test").instances) == 630
    with pytest.raises(DataError, match="unknown E2E split"):
        load_e2e("valid")


def test_bad_csv_inputs(tmp_path: Path) -> None:
    cases = {
        "nocol.csv": ('MR\n"name[A]"\n', r"nocol\.csv: line 1: no `ref` column"),
        "empty.csv": ("\n\n", r"empty\.csv: line 1: empty file"),
        "fields.csv": ('mr,ref\n"name[A]",A.\nname[B],B, with a comma\n', r"fields\.csv: line 3: expected 2 fields"),
        "unclosed.csv": ('mr,ref\n"name[A]","A.\n', r"unclosed\.csv: line 2: a quoted field .* never closed"),
        "emptyref.csv": ('mr,ref\n"name[A]",""\n', r"emptyref\.csv: line 2: empty reference"),
    }
    for name, (content, pattern) in cases.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(DataError, match=pattern):
            read_e2e_csv(tmp_path / name)
    (tmp_path / "bad.csv").write_bytes(b'mr,ref\n"name[A]","ok"\n"name[B]","caf\xe9"\n')
    with pytest.raises(DataError, match=r"bad\.csv: line 3: not valid UTF-8"):
        read_e2e_csv(tmp_path / "bad.csv")
    with pytest.raises(DataError, match=r"nothere\.csv: file not found"):
        read_e2e_csv(tmp_path / "nothere.csv")
    (tmp_path / "e2e").mkdir()
    with pytest.raises(DataError, match="no devset.csv"):
        load_e2e("dev", tmp_path)
    records = parse_e2e_csv('MR,REF\r\n"name[A]","x\r\ny"\r\n\r\n"name[B]",z\r\n', "crlf.csv")
    assert [(r.mr, r.ref, r.line) for r in records] == [("name[A]", "x\r\ny", 2), ("name[B]", "z", 5)]
    lora = tmp_path / "lora.txt"
    lora.write_text("name : A||A .\nname : B | no separator\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"lora\.txt: line 2: expected `context\|\|reference`"):
        read_lora_file(lora)


def test_a_split_made_of_parts_needs_every_part(tmp_path, shared_data):
    import shutil

    from peftlab.data import load_e2e

    folder = tmp_path / "e2e"
    folder.mkdir()
    for part in sorted((shared_data / "e2e").glob("trainset.csv.part*")):
        shutil.copy(part, folder / part.name)
    total = len(load_e2e("train", tmp_path).records)
    assert total == 42061
    (folder / "trainset.csv.part2of3").unlink()
    with pytest.raises(DataError, match=r"split into 3 parts but some are missing \(trainset\.csv\.part2of3\)"):
        load_e2e("train", tmp_path)


def test_a_malformed_mr_is_refused_with_its_line():
    from peftlab.data.e2e import parse_e2e_csv

    text = 'mr,ref\n"name[The Eagle], eatType[pub]",The Eagle is a pub.\n"name[A",A.\n'
    with pytest.raises(DataError, match=r"x.csv: line 3: cannot parse MR 'name\[A'"):
        parse_e2e_csv(text, "x.csv")
