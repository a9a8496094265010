"""The manifest of a package version, and the one stream its content is chunked from.

PATH (a file or a folder) is scanned first (:func:`scan`: names, sizes, modes; nothing read),
then read once as a single stream, the concatenation of its files in path order
(:meth:`Tree.open`), hashing every file with SHA-256 on the way. Storage thus sees neither file
names nor file sizes, small files share chunks, and a change inside one file only changes the
chunks around it. The manifest (JSON, then encrypted like a chunk) records::

    {"format": 2, "package", "version", "type", "created", "size",
     "files":  [{"path", "size", "mode", "sha256", "offset"}],   # offset in the stream
     "dirs":   [{"path", "mode"}],                                # empty folders
     "chunks": [{"id", "size"}],                                  # in stream order
     "packs":  {"<pack id>": [["<chunk id>", offset], ...]}}      # where this DP stores them

Paths are relative, POSIX, UTF-8. For a single file the manifest holds it by its base name.
Everything but ``packs`` is the version's *content*, the same on every distribution point;
``packs`` says where one distribution point stores each distinct chunk (its stored size is
the chunk's size plus :data:`crypto.OVERHEAD`), so each distribution point gets its own
sealed copy of the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from provisioner.content import crypto, layout
from provisioner.content.keys import PackageKeys
from provisioner.content.layout import check_package_id, check_version
from provisioner.errors import CdpError, UsageError

FORMAT = 2
_TYPE = re.compile(r"[a-z][a-z0-9-]{0,31}")


@dataclass
class FileEntry:
    path: str  # relative POSIX path inside the package
    size: int
    mode: int  # permission bits
    offset: int  # where the file starts in the package stream
    source: Path = field(repr=False)  # where it is read from on the site
    sha256: str | None = None  # set once the stream has passed over the whole file

    def to_json(self) -> dict:
        return {"path": self.path, "size": self.size, "mode": self.mode, "sha256": self.sha256, "offset": self.offset}


@dataclass
class Tree:
    """What PATH holds, in stream order. Scanned, not yet read."""

    root: Path
    files: list[FileEntry]
    empty_dirs: list[dict]  # {"path", "mode"}

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)

    def open(self) -> TreeReader:
        """A file-like reader of the package stream; it fills in each file's SHA-256."""
        return TreeReader(self.files)


def scan(path) -> Tree:
    """Walk PATH: files and empty folders with their modes, sorted by path, nothing read.

    Symlinks are followed when they stay inside the tree (stored as what they point to);
    a symlink that leaves the tree, a dangling or looping one, or a special file is refused
    with a UsageError naming it.
    """
    given = Path(path)
    if not given.exists():
        raise UsageError(f"{given} does not exist" + (" (broken symlink)" if given.is_symlink() else ""))
    root = given.resolve()
    tree = Tree(root, [], [])
    if root.is_file():
        name = given.name or root.name  # a symlinked file keeps the name it was given by
        _add_file(tree, _utf8_name(name, given), root, root.stat())
    elif root.is_dir():
        _walk(tree, root, "", (root,))
    else:
        raise UsageError(f"{root} is not a regular file or folder")
    return tree


def _walk(tree: Tree, folder: Path, prefix: str, ancestors: tuple[Path, ...]) -> None:
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise CdpError(f"cannot read folder {folder}: {exc.strerror}") from None
    if not names and prefix:
        tree.empty_dirs.append({"path": prefix.rstrip("/"), "mode": stat.S_IMODE(folder.stat().st_mode)})
    for name in names:
        source = folder / name
        rel = prefix + _utf8_name(name, source)
        if source.is_symlink():
            target = source.resolve()
            if not target.exists():
                raise UsageError(f"{rel}: broken symlink")
            if not target.is_relative_to(tree.root):
                raise UsageError(f"{rel}: symlink leaves the package folder (points to {target})")
            if target in ancestors:
                raise UsageError(f"{rel}: symlink loop (points to {target})")
            source = target
        try:
            info = source.stat()
        except OSError as exc:
            raise CdpError(f"cannot read {rel}: {exc.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            _walk(tree, source, rel + "/", ancestors + (source,))
        elif stat.S_ISREG(info.st_mode):
            _add_file(tree, rel, source, info)
        else:
            raise UsageError(f"{rel}: not a regular file or folder (special files cannot be distributed)")


def _add_file(tree: Tree, rel: str, source: Path, info: os.stat_result) -> None:
    if not os.access(source, os.R_OK):
        raise UsageError(f"{rel}: not readable (permission denied)")
    offset = tree.files[-1].offset + tree.files[-1].size if tree.files else 0
    tree.files.append(FileEntry(rel, info.st_size, stat.S_IMODE(info.st_mode), offset, source))


def _utf8_name(name: str, where: Path) -> str:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{os.fsdecode(where)!a}: the name is not valid UTF-8") from None
    return name


class TreeReader(io.RawIOBase):
    """The package stream: each file's bytes in order, hashed as they pass.

    A file whose size differs from what :func:`scan` saw raises CdpError (it changed while
    being distributed); the version would otherwise not match its manifest.
    """

    def __init__(self, files: list[FileEntry]):
        super().__init__()
        self._files = iter(files)
        self._entry: FileEntry | None = None
        self._fh = None
        self._hash = None
        self._left = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._next_file_if_done():
            return 0
        view = memoryview(buffer).cast("B")
        n = self._fh.readinto(view[: min(len(view), self._left)])
        if n == 0:
            raise CdpError(f"{self._entry.path} changed while being read (shorter than {self._entry.size} bytes)")
        self._hash.update(view[:n])
        self._left -= n
        return n

    def _next_file_if_done(self) -> bool:
        """Finish the current file when it is fully read and open the next non-empty one."""
        while self._entry is None or self._left == 0:
            if self._entry is not None:
                extra = self._fh.read(1)
                self._fh.close()
                if extra:
                    raise CdpError(f"{self._entry.path} changed while being read (it grew)")
                self._entry.sha256 = self._hash.hexdigest()
            self._entry = next(self._files, None)
            if self._entry is None:
                self._fh = None
                return False
            try:
                self._fh = open(self._entry.source, "rb", buffering=0)
            except OSError as exc:
                raise CdpError(f"cannot read {self._entry.path}: {exc.strerror}") from None
            self._hash = hashlib.sha256()
            self._left = self._entry.size
        return True

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        super().close()


def build(
    tree: Tree, chunks: list[dict], *, package: str, version: str, content_type: str, created: datetime | None = None
) -> dict:
    """The manifest of a version once its stream has been read (every file hashed)."""
    if any(entry.sha256 is None for entry in tree.files):
        raise ValueError("the package stream was not read to the end")
    if sum(chunk["size"] for chunk in chunks) != tree.size:
        raise ValueError("the chunks do not cover the package stream")
    return {
        "format": FORMAT,
        "package": check_package_id(package),
        "version": check_version(version),
        "type": check_type(content_type),
        "created": (created or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "size": tree.size,
        "files": [entry.to_json() for entry in tree.files],
        "dirs": list(tree.empty_dirs),
        "chunks": chunks,
    }


Stored = tuple[str, int, int]  # where a chunk is: (pack id, offset in the pack, stored size)


def content(manifest: dict) -> dict:
    """The manifest without where its chunks are stored: the same on every distribution point."""
    return {key: value for key, value in manifest.items() if key != "packs"}


def stored_chunks(manifest: dict) -> dict[str, int]:
    """Each distinct chunk of the version and its stored size, in stream order (the version's
    chunk list, and their sum, with which the front end counts egress)."""
    distinct = {chunk["id"]: chunk["size"] for chunk in manifest["chunks"]}
    return {chunk_id: crypto.encrypted_size(size) for chunk_id, size in distinct.items()}


def locate(manifest: dict, where: dict[str, Stored]) -> dict:
    """The manifest of one distribution point: its content and where that DP stores each chunk."""
    packs: dict[str, list] = {}
    for chunk_id in dict.fromkeys(chunk["id"] for chunk in manifest["chunks"]):
        pack_id, offset, _ = where[chunk_id]
        packs.setdefault(pack_id, []).append([chunk_id, offset])
    return {**content(manifest), "packs": packs}


def locations(manifest: dict) -> dict[str, Stored]:
    """Where each distinct chunk of the manifest is stored; CdpError if that is not well formed."""
    sizes = {chunk["id"]: chunk["size"] for chunk in manifest["chunks"]}
    where: dict[str, Stored] = {}
    try:
        for pack_id, chunks in manifest["packs"].items():
            for chunk_id, offset in chunks:
                ok = (layout.is_pack_id(pack_id) and chunk_id in sizes and chunk_id not in where
                      and isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0)
                if not ok:
                    raise ValueError(chunk_id)
                where[chunk_id] = (pack_id, offset, crypto.encrypted_size(sizes[chunk_id]))
    except (KeyError, TypeError, ValueError, AttributeError):
        where = {}
    if len(where) != len(sizes):
        raise CdpError(f"the manifest of {manifest.get('package')} {manifest.get('version')} does not say where"
                       " its chunks are stored")
    return where


def check_type(content_type: str) -> str:
    if not isinstance(content_type, str) or not _TYPE.fullmatch(content_type):
        raise UsageError(f"bad content type {content_type!r}: lowercase letters, digits and '-'")
    return content_type


def seal(manifest: dict, keys: PackageKeys) -> bytes:
    """The stored form of a manifest: compact JSON, encrypted with the package's content key."""
    body = json.dumps(manifest, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return crypto.encrypt_manifest(keys.content_key, manifest["package"], manifest["version"], body)


def unseal(blob: bytes, keys: PackageKeys, version: str) -> dict:
    """Decrypt and parse a stored manifest (CorruptContent if it is not this version's)."""
    body = crypto.decrypt_manifest(keys.content_key, keys.package_id, version, blob)
    manifest = json.loads(body)
    if manifest.get("format") != FORMAT:
        found = manifest.get("format")
        raise CdpError(f"the manifest of {keys.package_id} {version} has format {found!r}; this cdp reads {FORMAT}")
    return manifest
