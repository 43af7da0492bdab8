from __future__ import annotations

import shutil

import openpyxl
import pytest

from segvol.data.imagecas import ImageCAS
from segvol.data.records import apply_split, read_split, seeded_split, write_split
from segvol.errors import SegvolError


def _touch_pairs(folder, ids):
    for i in ids:
        (folder / f"{i}.img.nii.gz").write_bytes(b"")
        (folder / f"{i}.label.nii.gz").write_bytes(b"")


def test_finds_pairs_in_numeric_order(tmp_path):
    _touch_pairs(tmp_path, [10, 2, 1])
    (tmp_path / "notes.txt").write_text("x")
    records = ImageCAS().find_records(tmp_path)
    assert [r["id"] for r in records] == ["1", "2", "10"]
    assert records[0]["image"].endswith("1.img.nii.gz") and records[0]["label"].endswith("1.label.nii.gz")


def test_clear_errors(tmp_path):
    with pytest.raises(SegvolError, match="no such folder.*segvol synth imagecas"):
        ImageCAS().find_records(tmp_path / "missing")
    with pytest.raises(SegvolError, match="is empty"):
        ImageCAS().find_records(tmp_path)
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    with pytest.raises(SegvolError, match="not an ImageCAS folder"):
        ImageCAS().find_records(tmp_path)
    _touch_pairs(tmp_path, [1])
    (tmp_path / "2.img.nii.gz").write_bytes(b"")
    with pytest.raises(SegvolError, match=r"2\.img\.nii\.gz: no matching label"):
        ImageCAS().find_records(tmp_path)


def test_seeded_split_is_deterministic_and_complete():
    ids = [str(i) for i in range(1, 21)]
    a = seeded_split(ids, 0.2, 0.0, seed=3)
    assert a == seeded_split(list(reversed(ids)), 0.2, 0.0, seed=3)
    assert len(a["train"]) == 16 and len(a["val"]) == 4 and a["test"] == []
    b = seeded_split(ids, 0.15, 0.15, seed=3)
    assert (len(b["train"]), len(b["val"]), len(b["test"])) == (14, 3, 3)
    assert sorted(b["train"] + b["val"] + b["test"]) == sorted(ids)
    assert seeded_split(ids, 0.2, 0.0, seed=4) != a
    with pytest.raises(SegvolError, match="too few"):
        seeded_split(["1"], 0.2, 0.0, seed=0)


def test_split_file_round_trip(tmp_path):
    split = {"train": ["1", "2"], "val": ["3"], "test": []}
    write_split(split, tmp_path / "split.json")
    assert read_split(tmp_path / "split.json") == split
    records = [{"id": i} for i in ["1", "2", "3"]]
    assert [r["id"] for r in apply_split(records, split)["val"]] == ["3"]
    with pytest.raises(SegvolError, match="not found"):
        apply_split(records[:2], split)


def test_official_split_csv_and_xlsx(tmp_path):
    _touch_pairs(tmp_path, [1, 2, 3, 4])
    assert ImageCAS().official_split(tmp_path) is None
    (tmp_path / "imageCAS_data_split.csv").write_text("id,split\n1,Training\n2,training\n3,Validation\n4,Testing\n")
    assert ImageCAS().official_split(tmp_path) == {"train": ["1", "2"], "val": ["3"], "test": ["4"]}
    (tmp_path / "imageCAS_data_split.csv").unlink()
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["index", "Split-1"])
    for i, part in [(1, "train"), (2, "val"), (3, "train"), (4, "test")]:
        sheet.append([i, part])
    book.save(tmp_path / "imageCAS_data_split.xlsx")
    assert ImageCAS().official_split(tmp_path) == {"train": ["1", "3"], "val": ["2"], "test": ["4"]}


def test_official_split_unreadable(tmp_path):
    (tmp_path / "imageCAS_data_split.xlsx").write_bytes(b"not a spreadsheet")
    with pytest.raises(SegvolError, match="imageCAS_data_split.xlsx: cannot read split table"):
        ImageCAS().official_split(tmp_path)


def test_phantom_folder_is_read(imagecas_small, tmp_path):
    records = ImageCAS().find_records(imagecas_small)
    assert len(records) == 6
    copy = tmp_path / "c"
    shutil.copytree(imagecas_small, copy)
    (copy / "3.label.nii.gz").unlink()
    with pytest.raises(SegvolError, match="3.img.nii.gz: no matching label"):
        ImageCAS().find_records(copy)
