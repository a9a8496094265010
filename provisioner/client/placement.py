"""Where a version's bytes are: its manifest, checked, with every chunk placed in its files.

A package version is one stream, the concatenation of its files in manifest order, cut into
chunks (see :mod:`provisioner.content.manifest`). :class:`Placement` maps the stream both ways,
so a chunk can be read from, or written into, any folder that holds (or will hold) the files.
The manifest comes decrypted and authenticated from the site; its paths are still checked to
stay inside the destination (and out of its ``.cdp`` folder) before anything is written.
"""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from provisioner.content.manifest import content
from provisioner.errors import CdpError

STATE_DIR = ".cdp"
_CHUNK_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Span:
    """Part of a chunk that lands in one file: ``length`` bytes at ``file_offset`` in ``path``,
    ``chunk_offset`` bytes into the chunk."""

    path: str
    file_offset: int
    length: int
    chunk_offset: int


class Placement:
    """A manifest, checked, with its files and chunks placed in the package stream."""

    def __init__(self, manifest: dict, package: str):
        self.manifest = content(manifest)  # where one DP stores the chunks is not kept here
        try:
            self.version = manifest["version"]
            self.files = [dict(f) for f in manifest["files"]]
            self.dirs = [dict(d) for d in manifest["dirs"]]
            chunks = [(c["id"], c["size"]) for c in manifest["chunks"]]
            self.size = manifest["size"]
            ok = manifest["package"] == package and self._well_formed(chunks)
        except (KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            version = manifest.get("version") if isinstance(manifest, dict) else None
            raise CdpError(f"the manifest of {package} {version} is malformed")
        self.places: dict[str, list[int]] = {}  # chunk id -> its offsets in the stream, in order
        self.sizes: dict[str, int] = {}
        offset = 0
        for chunk_id, size in chunks:
            self.places.setdefault(chunk_id, []).append(offset)
            self.sizes[chunk_id] = size
            offset += size
        self.file_sizes = {f["path"]: f["size"] for f in self.files}
        self._placed = [f for f in self.files if f["size"] > 0]
        self._starts = [f["offset"] for f in self._placed]

    def _well_formed(self, chunks: list[tuple[str, int]]) -> bool:
        paths = [f["path"] for f in self.files] + [d["path"] for d in self.dirs]
        if not all(_safe_path(p) for p in paths) or len(set(paths)) != len(paths):
            return False
        folders = {str(parent) for p in paths for parent in PurePosixPath(p).parents}
        if any(f["path"] in folders for f in self.files):
            return False  # a file where another entry needs a folder
        offset = 0
        for f in self.files:
            if not (_count(f["size"]) and f["offset"] == offset and _count(f["mode"])
                    and isinstance(f["sha256"], str)):
                return False
            offset += f["size"]
        sizes: dict[str, int] = {}
        for chunk_id, size in chunks:
            if not (isinstance(chunk_id, str) and _CHUNK_ID.fullmatch(chunk_id) and _count(size) and size > 0
                    and sizes.setdefault(chunk_id, size) == size):
                return False
        return offset == self.size == sum(size for _, size in chunks) and all(_count(d["mode"]) for d in self.dirs)

    def spans(self, offset: int, size: int) -> list[Span]:
        """Where the ``size`` bytes at ``offset`` in the stream are in the files."""
        found = []
        at = max(bisect.bisect_right(self._starts, offset) - 1, 0)
        while at < len(self._placed) and self._placed[at]["offset"] < offset + size:
            f = self._placed[at]
            start, end = max(offset, f["offset"]), min(offset + size, f["offset"] + f["size"])
            if start < end:
                found.append(Span(f["path"], start - f["offset"], end - start, start - offset))
            at += 1
        return found

    def files_of(self, chunk_id: str) -> list[str]:
        """The files a chunk is part of (for messages)."""
        size = self.sizes[chunk_id]
        return list(dict.fromkeys(s.path for offset in self.places[chunk_id] for s in self.spans(offset, size)))


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _safe_path(path) -> bool:
    """A relative POSIX path that stays inside DIR and stays out of DIR/.cdp."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\0" in path:
        return False
    parts = path.split("/")
    return all(part not in ("", ".", "..") for part in parts) and parts[0] != STATE_DIR


def read_span(root: Path, placement: Placement, offset: int, size: int,
              sizes: dict[str, int] | None = None) -> bytes | None:
    """The ``size`` bytes at ``offset`` of ``placement``'s stream as the files under ``root`` hold
    them, or None if a file is missing or (with ``sizes``) not of its expected size."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    for span in placement.spans(offset, size):
        try:
            fd = os.open(root / span.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if sizes is not None and os.fstat(fd).st_size != sizes[span.path]:
                return None
            got = os.preadv(fd, [view[span.chunk_offset : span.chunk_offset + span.length]], span.file_offset)
        except OSError:
            return None
        finally:
            os.close(fd)
        if got != span.length:
            return None
    return bytes(buffer)
