"""The three label CSV readers read a file the same way (apse.data.labelcsv): Excel's byte-order mark,
a header in any case, blank lines skipped, rows known by their line number, paths relative to a base."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from apse.data.labelcsv import first_column, read_header, read_label_csv, resolve_path
from apse.data.manifest import read_manifest
from apse.data.polarity import LabelledImages
from apse.data.votes import VOTE_COLUMNS, read_votes
from apse.emotions import EMOTIONS


def _images(root: Path, names) -> None:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8)).save(root / "img" / name)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_bytes("\ufeff".encode() + "\r\n".join(lines).encode() + b"\r\n")  # BOM, CRLF: Excel's
    return path


def test_read_label_csv_rows_by_line_header_case_and_bom(tmp_path):
    path = _write(tmp_path / "l.csv", ["File,Label", "a.jpg,1", "", " , ", '"b\n.jpg",0', "c.jpg,1"])
    table = read_label_csv(path, "empty!")
    assert table.header == ["File", "Label"] and table.columns == ["file", "label"]
    assert [line for line, _ in table.rows] == [2, 6, 7]          # a quoted newline: the row ends on 6
    assert table.rows[1][1] == ["b\n.jpg", "0"]
    assert read_header(path) == ["File", "Label"]
    assert first_column(table.columns, ("path", "file")) == "file"
    assert first_column(table.columns, ("path",)) is None
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ValueError, match="^empty!$"):
        read_label_csv(tmp_path / "e.csv", "empty!")
    assert read_header(tmp_path / "e.csv") == []
    assert resolve_path("img/../a.jpg", "/data") == "/data/a.jpg"
    assert resolve_path("/abs/a.jpg", "/data") == "/abs/a.jpg"


def test_the_three_readers_agree_on_lines_and_paths(tmp_path):
    """One file layout (BOM, upper-case header, a blank line) read by each reader: the same images,
    in the same order, with the same origins."""
    _images(tmp_path, ["a.jpg", "b.jpg"])
    rows = [f"img/a.jpg,{EMOTIONS[0]}", "", f"img/b.jpg,{EMOTIONS[-1]}"]
    manifest = read_manifest(_write(tmp_path / "m.csv", ["PATH,Emotion", *rows]), tmp_path)
    labelled = LabelledImages.from_csv(_write(tmp_path / "p.csv", ["FILE,Emotion", *rows]), root=tmp_path)
    votes = ",".join(c.upper() for c in VOTE_COLUMNS)
    voted = read_votes(_write(tmp_path / "v.csv", [f"File,{votes}", "img/a.jpg,5,0,0,0,0,0,0,0", "",
                                                   "img/b.jpg,0,0,0,0,0,0,0,5"]), tmp_path)
    expected = [(str(tmp_path / "img" / "a.jpg"), 0)]
    assert manifest.samples[:1] == labelled.samples[:1] == voted.samples[:1] == expected
    assert [p for p, _ in manifest.samples] == [p for p, _ in labelled.samples] == [p for p, _ in voted.samples]
    paths = [p for p, _ in voted.samples]
    assert [manifest.origin[p] for p in paths] == ["m.csv line 2", "m.csv line 4"]
    assert [voted.origin[p] for p in paths] == ["v.csv line 2", "v.csv line 4"]
    assert [labelled._listed_at(p) for p in paths] == [" (p.csv line 2)", " (p.csv line 4)"]
