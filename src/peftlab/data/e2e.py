"""The E2E NLG Challenge data (Novikova et al. 2017) in its official release format.

Files (``e2e-dataset`` v1.0.0): ``trainset.csv``, ``devset.csv``, ``testset_w_refs.csv`` -- an ``mr,ref`` header, one
(meaning representation, human reference) pair per record, RFC-4180 quoting (a few train references contain line
breaks inside quotes) -- and ``testset.csv`` (``MR`` only). The train CSV may also come as the official zip
(``e2e-dataset.zip``) or as ``trainset.csv.part1of3..3of3`` (record-aligned byte ranges; only part 1 has the header).

References are grouped into multi-reference instances exactly as the official scorer does: consecutive records
with the same MR form one instance (the test set gives 630 instances with 1..45 references). The train set is
shuffled, so ``grouping="unique"`` (all records of an MR, in order of first appearance) is offered for it.

The model input is a linearized MR (:func:`linearize_mr`); the ``"lora"`` format reproduces the contexts of the
LoRA repository's ``data/e2e/{valid,test}.txt`` exactly (``name : X | Type : Y | ...``).
"""
from __future__ import annotations

import csv
import io
import os
import re
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence

from ..errors import DataError
from .files import decode_text, read_text, resolve_data_dir
from .subset import SubsetInfo, SubsetSpec, apply_subset

__all__ = [
    "E2E_RELEASE_URL",
    "E2EInstance",
    "E2ERecord",
    "E2ESplit",
    "MRFormat",
    "MR_FORMATS",
    "download_e2e",
    "group_references",
    "linearize_mr",
    "load_e2e",
    "parse_e2e_csv",
    "parse_mr",
    "read_e2e_csv",
    "read_lora_file",
]

#: The official release archive (tuetschek/e2e-dataset v1.0.0).
E2E_RELEASE_URL = "https://github.com/tuetschek/e2e-dataset/releases/download/v1.0.0/e2e-dataset.zip"

_SPLIT_FILES = {"train": "trainset.csv", "dev": "devset.csv", "test": "testset_w_refs.csv"}
Grouping = Literal["consecutive", "unique"]


@dataclass(frozen=True)
class E2ERecord:
    """One (MR, reference) pair (both stripped of surrounding white space); ``line`` is the 1-based line where the
    record starts in ``source``."""

    mr: str
    ref: str
    line: int = 0
    source: str = ""


@dataclass(frozen=True)
class E2EInstance:
    """One multi-reference instance: an MR and all of its references."""

    mr: str
    refs: tuple[str, ...]


@dataclass
class E2ESplit:
    """A loaded split: the records in file order and the grouped instances."""

    name: str
    source: str
    records: list[E2ERecord]
    grouping: Grouping = "consecutive"
    subset: SubsetInfo | None = None
    instances: list[E2EInstance] = field(init=False)

    def __post_init__(self) -> None:
        self.instances = group_references(self.records, self.grouping)

    def take(self, spec: SubsetSpec, level: Literal["instances", "records"] = "instances") -> "E2ESplit":
        """A subset of the instances (for evaluation; keeps all references of each kept MR) or of the records
        (for training). Stratified subsets stratify by the MR's ``eatType``. The result records the subset."""
        if level == "records":
            labels = [dict(parse_mr(r.mr)).get("eatType", "") for r in self.records] if spec.strategy == "stratified" else None
            kept, info = apply_subset(self.records, spec, labels)
            return E2ESplit(self.name, self.source, kept, self.grouping, info)
        labels = [dict(parse_mr(i.mr)).get("eatType", "") for i in self.instances] if spec.strategy == "stratified" else None
        kept_inst, info = apply_subset(self.instances, spec, labels)
        keep = {inst.mr for inst in kept_inst}
        return E2ESplit(self.name, self.source, [r for r in self.records if r.mr in keep], self.grouping, info)

    def metadata(self) -> dict[str, object]:
        """What to record about this data in a run's metadata."""
        return {
            "dataset": "e2e_nlg",
            "split": self.name,
            "source": self.source,
            "n_records": len(self.records),
            "n_instances": len(self.instances),
            "grouping": self.grouping,
            "subset": self.subset.to_dict() if self.subset else None,
        }


# ---------------------------------------------------------------------------------------------------- CSV reading
def _check_parts(folder: Path, filename: str, parts: list[Path]) -> list[Path]:
    """A split stored as ``NAME.partKofN`` must have every part 1..N, all with the same N; returns them in order."""
    found: dict[int, set[int]] = {}
    for part in parts:
        match = re.fullmatch(re.escape(filename) + r"\.part(\d+)of(\d+)", part.name)
        if not match:
            raise DataError(f"{part}: not a part file name (expected {filename}.partKofN)")
        found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if len(found) != 1:
        raise DataError(f"{folder}: {filename} parts disagree on the number of parts ({sorted(found)})")
    (total, have), = found.items()
    missing = sorted(set(range(1, total + 1)) - have)
    if missing or have - set(range(1, total + 1)):
        names = ", ".join(f"{filename}.part{k}of{total}" for k in missing) or "none"
        raise DataError(f"{folder}: {filename} is split into {total} parts but some are missing ({names}) or out of "
                        f"range; a split made of parts needs every part")
    return sorted(parts, key=lambda part: int(re.search(r"\.part(\d+)of", part.name).group(1)))


def parse_e2e_csv(
    text: str, name: str, header: Sequence[str] | None = None, require_ref: bool = True, line_offset: int = 0
) -> list[E2ERecord]:
    """Parse E2E CSV text strictly. ``header`` is given for header-less parts (train parts 2 and 3).

    Raises :class:`DataError` naming ``name``, the line and the problem for: an empty file, a missing ``mr`` /
    ``ref`` column, a record with the wrong number of fields, broken quoting, an empty MR / reference, or an MR
    that is not ``attribute[value], ...`` pairs (e.g. ``name[A`` without its bracket).
    """
    if not text.strip():
        raise DataError(f"{name}: line 1: empty file (expected an `mr,ref` header and records)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[E2ERecord] = []
    cols: list[str] | None = [c.strip().lower() for c in header] if header is not None else None
    mr_col = ref_col = -1
    prev_end = 0
    seen_mrs: set[str] = set()
    try:
        for row in reader:
            start = prev_end + 1 + line_offset
            prev_end = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line (the official scorer skips them too)
            if cols is None:
                cols = [c.strip().lower() for c in row]
                continue
            if mr_col < 0:
                mr_col, ref_col = _find_columns(cols, name, require_ref)
            if len(row) != len(cols):
                raise DataError(
                    f"{name}: line {start}: expected {len(cols)} fields ({','.join(cols)}), found {len(row)}"
                    " (check the quoting of fields that contain commas)"
                )
            mr = row[mr_col].strip()
            ref = row[ref_col].strip() if ref_col >= 0 else ""
            if not mr:
                raise DataError(f"{name}: line {start}: empty MR field")
            if mr not in seen_mrs:  # each distinct MR is checked once (train repeats them ~8 times)
                try:
                    parse_mr(mr)
                except DataError as err:
                    raise DataError(f"{name}: line {start}: {err}") from None
                seen_mrs.add(mr)
            if require_ref and not ref:
                raise DataError(f"{name}: line {start}: empty reference field")
            records.append(E2ERecord(mr, ref, start, name))
    except csv.Error as err:
        start = prev_end + 1 + line_offset
        if "end of data" in str(err):
            detail = "a quoted field opened in the record starting on this line is never closed"
        else:
            seen = reader.line_num + line_offset
            where = f", noticed on line {seen}" if seen != start else ""
            detail = f"broken quoting in the record starting on this line ({err}{where}; is a quote unclosed?)"
        raise DataError(f"{name}: line {start}: {detail}") from None
    if cols is None:
        raise DataError(f"{name}: line 1: empty file (expected an `mr,ref` header and records)")
    if mr_col < 0:
        _find_columns(cols, name, require_ref)  # header-only file: still report a bad header first
        raise DataError(f"{name}: line {1 + line_offset}: no records after the header")
    return records


def _find_columns(cols: Sequence[str], name: str, require_ref: bool) -> tuple[int, int]:
    if "mr" not in cols:
        raise DataError(f"{name}: line 1: no `mr` column in the header {list(cols)}")
    if require_ref and "ref" not in cols:
        raise DataError(f"{name}: line 1: no `ref` column in the header {list(cols)}")
    return cols.index("mr"), cols.index("ref") if "ref" in cols else -1


def read_e2e_csv(path: str | os.PathLike[str], require_ref: bool = True) -> list[E2ERecord]:
    """Read one E2E CSV file (see :func:`parse_e2e_csv`)."""
    return parse_e2e_csv(read_text(path), str(path), require_ref=require_ref)


def _read_split_records(folder: Path, split: str) -> tuple[list[E2ERecord], str]:
    filename = _SPLIT_FILES[split]
    if (folder / filename).is_file():
        return read_e2e_csv(folder / filename), str(folder / filename)
    parts = sorted(folder.glob(f"{filename}.part*of*"))
    if parts:
        parts = _check_parts(folder, filename, parts)
        records = read_e2e_csv(parts[0])
        header = ["mr", "ref"]
        for part in parts[1:]:
            records += parse_e2e_csv(read_text(part), str(part), header=header)
        return records, "+".join(str(p) for p in parts)
    archive = folder / "e2e-dataset.zip"
    if archive.is_file():
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if m.rsplit("/", 1)[-1] == filename]
            if members:
                name = f"{archive}!{members[0]}"
                return parse_e2e_csv(decode_text(zf.read(members[0]), name), name), name
    raise DataError(
        f"{folder}: no {filename} (nor {filename}.partNofM, nor e2e-dataset.zip containing it); "
        f"download the official release from {E2E_RELEASE_URL}"
    )


def group_references(records: Iterable[E2ERecord], grouping: Grouping = "consecutive") -> list[E2EInstance]:
    """Group records into instances: ``"consecutive"`` = the official scorer's rule (a new instance whenever the
    MR differs from the previous record's), ``"unique"`` = one instance per distinct MR (first-appearance order)."""
    if grouping not in ("consecutive", "unique"):
        raise ValueError(f"grouping must be 'consecutive' or 'unique', not {grouping!r}")
    groups: dict[str, list[str]] = {}
    order: list[tuple[str, list[str]]] = []
    for rec in records:
        if grouping == "consecutive":
            if order and order[-1][0] == rec.mr:
                order[-1][1].append(rec.ref)
            else:
                order.append((rec.mr, [rec.ref]))
        elif rec.mr in groups:
            groups[rec.mr].append(rec.ref)
        else:
            groups[rec.mr] = [rec.ref]
            order.append((rec.mr, groups[rec.mr]))
    return [E2EInstance(mr, tuple(refs)) for mr, refs in order]


def load_e2e(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    grouping: Grouping | None = None,
    subset: SubsetSpec | None = None,
) -> E2ESplit:
    """Load ``"train"``, ``"dev"`` or ``"test"`` from ``data_dir`` (default ``$PEFTLAB_DATA_DIR``; the folder may be
    the data root holding ``e2e/`` or the E2E folder itself). ``grouping`` defaults to ``"consecutive"`` for dev
    and test (the official scorer's rule) and ``"unique"`` for the shuffled train set. ``subset`` subsamples MR
    instances (dev/test) or records (train)."""
    if split not in _SPLIT_FILES:
        raise DataError(f"unknown E2E split {split!r}; choose one of {sorted(_SPLIT_FILES)}")
    folder = resolve_data_dir(data_dir, "e2e", ("devset.csv", "trainset.csv*", "testset*.csv", "e2e-dataset.zip"))
    records, source = _read_split_records(folder, split)
    data = E2ESplit(split, source, records, grouping or ("unique" if split == "train" else "consecutive"))
    if subset is not None:
        data = data.take(subset, level="records" if split == "train" else "instances")
    return data


def read_lora_file(path: str | os.PathLike[str]) -> list[E2ERecord]:
    """Read the LoRA repository's ``data/e2e/*.txt`` format: ``<linearized MR>||<tokenized reference>`` per line."""
    text = read_text(path)
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line.count("||") != 1:
            raise DataError(f"{path}: line {number}: expected `context||reference` (one `||`), found {line.count('||')}")
        context, ref = line.split("||")
        records.append(E2ERecord(context.strip(), ref.strip(), number, str(path)))
    if not records:
        raise DataError(f"{path}: line 1: empty file (expected `context||reference` lines)")
    return records


# ---------------------------------------------------------------------------------------------------- MRs
_MR_PAIR = re.compile(r"\s*([^\[\],]+?)\s*\[([^\[\]]*)\]\s*(,|$)")


def parse_mr(mr: str) -> list[tuple[str, str]]:
    """``"name[The Eagle], eatType[coffee shop]"`` -> ``[("name", "The Eagle"), ("eatType", "coffee shop")]``."""
    pairs, pos = [], 0
    while pos < len(mr):
        match = _MR_PAIR.match(mr, pos)
        if match is None or match.end() == pos:
            raise DataError(f"cannot parse MR {mr!r} at character {pos + 1}: expected `attribute[value]` pairs")
        pairs.append((match.group(1), match.group(2)))
        pos = match.end()
    if not pairs:
        raise DataError(f"empty MR {mr!r}")
    return pairs


def _lora_value(value: str) -> str:
    value = value.replace("£", " £ ")
    value = re.sub(r"(\d)-(\d)", r"\1 - \2", value)
    return " ".join(value.split())


@dataclass(frozen=True)
class MRFormat:
    """How :func:`linearize_mr` writes an MR.

    Attributes:
        pair: template of one attribute (``{key}``, ``{value}``).
        separator: string between pairs.
        key_names: renaming of attribute names (others kept).
        split_values: split ``£`` and digit ranges in values (``£20-25`` -> ``£ 20 - 25``), as the LoRA data does.
    """

    pair: str = "{key}[{value}]"
    separator: str = ", "
    key_names: Mapping[str, str] = field(default_factory=dict)
    split_values: bool = False


#: Presets: ``"raw"`` is the CSV's own form; ``"lora"`` is the LoRA / Prefix-Tuning context format.
MR_FORMATS: dict[str, MRFormat] = {
    "raw": MRFormat(),
    "lora": MRFormat(
        pair="{key} : {value}",
        separator=" | ",
        key_names={"eatType": "Type", "familyFriendly": "family friendly", "priceRange": "price"},
        split_values=True,
    ),
    "plain": MRFormat(pair="{key}: {value}", separator="; "),
}


def linearize_mr(mr: str, fmt: str | MRFormat = "lora") -> str:
    """The model input for an MR. ``fmt`` is a preset name from :data:`MR_FORMATS` or an :class:`MRFormat`.

    >>> linearize_mr("name[The Eagle], eatType[pub], priceRange[£20-25]")
    'name : The Eagle | Type : pub | price : £ 20 - 25'
    """
    if isinstance(fmt, str):
        if fmt not in MR_FORMATS:
            raise ValueError(f"unknown MR format {fmt!r}; choose one of {sorted(MR_FORMATS)} or pass an MRFormat")
        fmt = MR_FORMATS[fmt]
    parts = []
    for key, value in parse_mr(mr):
        value = _lora_value(value) if fmt.split_values else value
        parts.append(fmt.pair.format(key=fmt.key_names.get(key, key), value=value))
    return fmt.separator.join(parts)


def download_e2e(dest: str | os.PathLike[str], url: str = E2E_RELEASE_URL) -> Path:
    """Download and unpack the official release into ``dest/e2e`` (needs network access); returns that folder."""
    folder = Path(dest) / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "e2e-dataset.zip"
    if not archive.exists():
        with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - fixed https URL
            archive.write_bytes(response.read())
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            base = member.rsplit("/", 1)[-1]
            if base.endswith(".csv") and not (folder / base).exists():
                (folder / base).write_bytes(zf.read(member))
    return folder

