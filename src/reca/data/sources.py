"""Where the raw images come from: a directory tree, a list file, or webdataset ``.tar`` shards.

`curate` enumerates a source into items, one per candidate image, in a
deterministic order and without loading the images; `degrade` reads the
images `curate` accepted back through :func:`open_item`, straight out of the
same files and shards (nothing is copied or extracted, and nothing in the
source is ever written).

A source is one of:

* a directory: its top-level folders are splits (``captioned/``,
  ``unlabeled/``, ``heldout/``); files with an image extension anywhere below
  are items, and every ``.tar`` file below is a webdataset shard whose image
  members are items;
* a list file (``.txt`` or ``.lst``): one path per line (image or ``.tar``
  shard), relative to the list file's folder or absolute; blank lines and
  lines starting with ``#`` are skipped;
* a single ``.tar`` shard.

An item's ``path`` names it for people and manifests: the file's path
relative to the source root, or ``<shard path>::<member name>`` for an image
inside a shard. Its split is the first folder of that path when it is a
known split, else the default split (if one is configured); an image with
neither is a :class:`SourceProblem` (``unknown_split``), never silently skipped. Webdataset captions come from a sidecar member with
the same key (``<key>.txt``, or the ``caption`` field of ``<key>.json``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import tarfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
SHARD_EXTENSION = ".tar"
LIST_EXTENSIONS = frozenset({".txt", ".lst"})
TAR_SEPARATOR = "::"
_SIDECAR_MAX_BYTES = 1 << 20  # captions longer than this are not captions


class SourceError(ValueError):
    """A source location that is neither a directory, a list file nor a tar shard."""


@dataclass(frozen=True)
class SourceItem:
    """One candidate image, not yet read.

    Attributes:
        path: the item's name: a path relative to the source root (or
            absolute, from a list file), with ``::member`` for a tar member.
        split: the split it belongs to.
        key: its path inside the split folder (what ``captions.jsonl`` rows name).
        offset: byte offset of a tar member's data in its shard.
        size: byte size of a tar member's data.
        caption: a webdataset sidecar caption, if the shard has one.
    """

    path: str
    split: str
    key: str
    offset: int | None = None
    size: int | None = None
    caption: str | None = None


@dataclass(frozen=True)
class SourceProblem:
    """An input that cannot even be enumerated (a missing listed file, an unreadable shard)."""

    path: str
    reason: str
    detail: str


def _suffix(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def source_root(location: str | Path) -> Path:
    """The folder that item paths of ``location`` are relative to."""
    location = Path(location)
    return location if location.is_dir() else location.parent


def split_of(path: str, splits: Sequence[str], default_split: str | None) -> tuple[str | None, str]:
    """``(split, key)`` of an item path: the first folder if it is a split, else the default split."""
    shard, sep, member = path.partition(TAR_SEPARATOR)
    head, slash, rest = shard.partition("/")
    if slash and head in splits:
        return head, rest + sep + member
    return default_split, path


class ImageSource:
    """Enumerates the items of a source location, in a deterministic order.

    Args:
        location: a directory, a list file (``.txt``/``.lst``) or a ``.tar`` shard.
        splits: known split names (top-level folders).
        default_split: split of items outside every split folder; ``None`` leaves them without one.

    Attributes:
        ignored: files skipped, counted by extension while iterating: neither
            an image's nor a shard's extension (``captions.jsonl``, ``.heic``,
            shard members that are not captions), or hidden (``(hidden)``:
            names starting with a dot, such as macOS ``._*`` resource forks).
    """

    def __init__(self, location: str | Path, splits: Sequence[str], default_split: str | None = None) -> None:
        self.location = Path(location)
        if not self.location.exists():
            raise FileNotFoundError(
                f"{self.location}: input not found (dvc pull, or point curate at your images: a folder, "
                "a list file of paths, or a .tar shard)"
            )
        suffix = self.location.suffix.lower()
        if self.location.is_dir():
            self.kind = "tree"
        elif suffix in LIST_EXTENSIONS:
            self.kind = "list"
        elif suffix == SHARD_EXTENSION:
            self.kind = "shard"
        else:
            raise SourceError(
                f"{self.location}: not a directory, a list file ({', '.join(sorted(LIST_EXTENSIONS))}) "
                f"or a {SHARD_EXTENSION} shard"
            )
        self.root = source_root(self.location)
        self.splits = list(splits)
        self.default_split = default_split
        self.ignored: Counter[str] = Counter()

    def __iter__(self) -> Iterator[SourceItem | SourceProblem]:
        if self.kind == "tree":
            yield from self._container_items(self._walk(self.root, ""))
        elif self.kind == "list":
            yield from self._container_items(self._listed())
        else:
            yield from self._shard(self.location.name)

    def _walk(self, folder: Path, prefix: str, seen: frozenset[tuple[int, int]] = frozenset()) -> Iterator[str]:
        """Relative paths of files below ``folder``: names sorted per folder, depth first, hidden skipped.

        Symlinked folders are followed (datasets are often linked in), except
        one that leads back to a folder above it.
        """
        info = folder.stat()
        here = (info.st_dev, info.st_ino)
        if here in seen:
            return
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                self.ignored["(hidden)"] += 1
                continue
            rel = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=True):
                yield from self._walk(Path(entry.path), rel + "/", seen | {here})
            elif entry.is_file(follow_symlinks=True) or entry.is_symlink():
                yield rel  # a dangling link too: reading it fails, and curate reports it

    def _listed(self) -> Iterator[str | SourceProblem]:
        with self.location.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                rel = posixpath.normpath(entry.replace(os.sep, "/"))
                if not (self.root / rel).is_file():
                    yield SourceProblem(rel, "missing_file", f"listed in {self.location.name} line {lineno}, "
                                        "but no such file")
                    continue
                yield rel

    def _container_items(self, paths: Iterator[str | SourceProblem]) -> Iterator[SourceItem | SourceProblem]:
        for rel in paths:
            if isinstance(rel, SourceProblem):
                yield rel
                continue
            suffix = _suffix(rel)
            if suffix in IMAGE_EXTENSIONS:
                yield self._item(rel)
            elif suffix == SHARD_EXTENSION:
                yield from self._shard(rel)
            else:
                self.ignored[suffix or "(none)"] += 1

    def _item(self, path: str, **location: Any) -> SourceItem | SourceProblem:
        split, key = split_of(path, self.splits, self.default_split)
        if split is None:
            return SourceProblem(path, "unknown_split", f"not under any of the split folders {self.splits} "
                                 "(set curate.default_split to take such images)")
        return SourceItem(path=path, split=split, key=key, **location)

    def _shard(self, rel: str) -> Iterator[SourceItem | SourceProblem]:
        """Image members of one shard, in member order, then a problem row if the shard is damaged."""
        images: list[tarfile.TarInfo] = []
        captions: dict[str, str] = {}
        problem = None
        try:
            with tarfile.open(self.root / rel, mode="r:") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    suffix = _suffix(info.name)
                    if suffix in IMAGE_EXTENSIONS:
                        images.append(info)
                    elif suffix in (".txt", ".json") and info.size <= _SIDECAR_MAX_BYTES:
                        caption = _sidecar_caption(tar, info)
                        if caption is not None:
                            captions[_webdataset_key(info.name)] = caption
                        else:
                            self.ignored[suffix] += 1
                    else:
                        self.ignored[suffix or "(none)"] += 1
        except (tarfile.TarError, OSError, EOFError) as err:
            problem = SourceProblem(rel, "corrupt_shard", f"{type(err).__name__}: {err} (after {len(images)} "
                                    "image members, which are curated on their own)")
        for info in images:
            yield self._item(f"{rel}{TAR_SEPARATOR}{info.name}", offset=info.offset_data, size=info.size,
                             caption=captions.get(_webdataset_key(info.name)))
        if problem is not None:
            yield problem


def _webdataset_key(name: str) -> str:
    """Webdataset groups members by the name up to the first dot of the basename."""
    folder, base = posixpath.split(name)
    return posixpath.join(folder, base.split(".", 1)[0])


def _sidecar_caption(tar: tarfile.TarFile, info: tarfile.TarInfo) -> str | None:
    fh = tar.extractfile(info)
    if fh is None:
        return None
    text = fh.read().decode("utf-8", errors="replace")
    if info.name.endswith(".txt"):
        return text.strip() or None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        return None
    caption = meta.get("caption") if isinstance(meta, dict) else None
    return caption.strip() if isinstance(caption, str) and caption.strip() else None


def _read_member(shard: Path, member: str, offset: int | None, size: int | None) -> bytes:
    if offset is None or size is None:
        with tarfile.open(shard, mode="r:") as tar:
            fh = tar.extractfile(member)
            if fh is None:
                raise FileNotFoundError(f"{shard}: member {member!r} is not a regular file")
            return fh.read()
    with shard.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(size)
    if len(data) != size:
        raise EOFError(f"{shard}: member {member!r} is cut short ({len(data)} of {size} bytes)")
    return data


@contextlib.contextmanager
def open_item(root: str | Path, path: str, offset: int | None = None, size: int | None = None) -> Iterator[BinaryIO]:
    """Open an item's bytes for reading, given its ``path`` (and tar ``offset``/``size`` if known).

    Plain files are opened in place; a tar member is read from its shard at
    ``offset`` (one seek), or looked up by name when the offset is unknown.
    """
    root = Path(root)
    shard, sep, member = path.partition(TAR_SEPARATOR)
    if not sep:
        with (root / path).open("rb") as fh:
            yield fh
        return
    yield io.BytesIO(_read_member(root / shard, member, offset, size))
