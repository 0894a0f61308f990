"""Tests for image sources (reca.data.sources): directory trees, list files, webdataset shards."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from reca.data.sources import ImageSource, SourceError, SourceItem, SourceProblem, open_item, split_of
from reca_fixtures.images import write_tar

SPLITS = ["captioned", "unlabeled"]


def _touch(root: Path, rel: str, data: bytes = b"x") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_tree_walk_is_sorted_depth_first_and_skips_hidden_and_other_files(tmp_path: Path) -> None:
    for rel in ["unlabeled/b.png", "unlabeled/a/z.JPG", "unlabeled/a.webp", "captioned/c.gif", ".cache/x.png",
                "unlabeled/.hidden.png", "unlabeled/readme.md", "captioned/captions.jsonl"]:
        _touch(tmp_path, rel)
    source = ImageSource(tmp_path, SPLITS)
    items = list(source)
    assert [i.path for i in items] == ["captioned/c.gif", "unlabeled/a/z.JPG", "unlabeled/a.webp", "unlabeled/b.png"]
    assert all(isinstance(i, SourceItem) for i in items)
    assert source.ignored == {".md": 1, ".jsonl": 1, "(hidden)": 2}


def test_symlinked_folders_are_followed_but_not_round_in_circles(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(tmp_path / "elsewhere", "a.png")
    (root / "unlabeled").mkdir(parents=True)
    (root / "unlabeled" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "loop").symlink_to(root / "unlabeled")  # leads back up: not followed again
    assert [i.path for i in ImageSource(root, SPLITS)] == ["unlabeled/linked/a.png"]


def test_split_comes_from_the_top_folder_else_the_default(tmp_path: Path) -> None:
    assert split_of("unlabeled/x/y.png", SPLITS, None) == ("unlabeled", "x/y.png")
    assert split_of("captioned/s.tar::k.png", SPLITS, None) == ("captioned", "s.tar::k.png")
    assert split_of("other/y.png", SPLITS, "unlabeled") == ("unlabeled", "other/y.png")
    assert split_of("/abs/y.png", SPLITS, None) == (None, "/abs/y.png")
    _touch(tmp_path, "misc/y.png")
    (problem,) = list(ImageSource(tmp_path, SPLITS))
    assert isinstance(problem, SourceProblem) and problem.reason == "unknown_split"


def test_shard_members_are_items_with_offsets_and_sidecar_captions(tmp_path: Path) -> None:
    shard = write_tar(tmp_path / "unlabeled" / "s.tar", {
        "d/k1.jpg": b"JPEGDATA", "d/k1.txt": b"  a cat \n", "k2.seg.png": b"PNG", "k2.seg.json": b'{"caption": "x"}',
        "k3.png": b"P3", "k3.json": b"not json", "notes.md": b"#",
    })
    source = ImageSource(tmp_path, SPLITS)
    items = list(source)
    assert [(i.path, i.caption) for i in items] == [
        ("unlabeled/s.tar::d/k1.jpg", "a cat"), ("unlabeled/s.tar::k2.seg.png", "x"), ("unlabeled/s.tar::k3.png", None)]
    assert items[0].key == "s.tar::d/k1.jpg"
    assert source.ignored == {".md": 1, ".json": 1}  # notes.md and the unparsable k3.json
    with open_item(tmp_path, items[0].path, items[0].offset, items[0].size) as fh:
        assert fh.read() == b"JPEGDATA"
    with open_item(tmp_path, items[1].path) as fh:  # no offset: looked up by name
        assert fh.read() == b"PNG"
    assert shard.read_bytes()  # the shard itself is untouched by reading


def test_unreadable_shard_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    _touch(tmp_path, "unlabeled/broken.tar", b"\x00garbage" * 100)
    items = list(ImageSource(tmp_path, SPLITS))
    assert [(i.path, i.reason) for i in items] == [("unlabeled/broken.tar", "corrupt_shard")]


def test_short_member_read_raises_eof(tmp_path: Path) -> None:
    shard = write_tar(tmp_path / "s.tar", {"a.png": b"0123456789"})
    with tarfile.open(shard) as tar:
        offset = tar.getmember("a.png").offset_data
    with pytest.raises(EOFError, match="cut short"), open_item(tmp_path, "s.tar::a.png", offset, 10_000):
        pass


def test_list_file_resolves_relative_and_absolute_paths(tmp_path: Path) -> None:
    _touch(tmp_path / "data", "unlabeled/a.png")
    _touch(tmp_path / "elsewhere", "b.png")
    listing = tmp_path / "data" / "list.lst"
    listing.write_text(f"unlabeled/a.png\n{tmp_path / 'elsewhere' / 'b.png'}\n# comment\n\nmissing.png\n",
                       encoding="utf-8")
    items = list(ImageSource(listing, SPLITS, default_split="unlabeled"))
    assert [(i.path, type(i).__name__) for i in items] == [
        ("unlabeled/a.png", "SourceItem"), (str(tmp_path / "elsewhere" / "b.png"), "SourceItem"),
        ("missing.png", "SourceProblem")]
    with open_item(listing.parent, items[1].path) as fh:
        assert fh.read() == b"x"


def test_a_single_shard_is_a_source(tmp_path: Path) -> None:
    shard = write_tar(tmp_path / "one.tar", {"a.png": b"1"})
    (item,) = list(ImageSource(shard, SPLITS, default_split="unlabeled"))
    assert (item.path, item.split) == ("one.tar::a.png", "unlabeled")


def test_other_locations_are_rejected_with_the_allowed_kinds(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"PK")
    with pytest.raises(SourceError, match="list file"):
        ImageSource(tmp_path / "x.zip", SPLITS)
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        ImageSource(tmp_path / "nothing_here", SPLITS)
