"""The destination folder of a fetch: what version it holds, where a new one is staged, and the
chunks a client already has on disk.

A fetch never writes a file of the package into DIR until the whole version is there and
verified. It works in DIR's own folder, so that the final moves are renames::

    DIR/.cdp/packages/<package>/     (0700)
        lock              held (flock) by the one fetch writing this package into DIR
        installed.json    the manifest of the version DIR holds (decrypted, 0600)
        staging/
            manifest.json the manifest of the version being fetched
            journal       ids of the chunks whose bytes are in files/, one per line
            files/<path>  the version's files, each chunk written at its place

A chunk is *found locally* (no download) when its bytes, read from disk and hashed with the
package's id key, give its id: in the staging area (the journal of an interrupted run: resume),
in DIR's files where the new manifest puts them, or where the installed version's manifest
puts them (delta). Nothing read from disk is trusted before that check.

:meth:`Destination.commit` checks every staged file's SHA-256 (computed while the chunks came
in), fsyncs it and sets its mode; removes the files the old version had and the new one does not;
renames the staged files into DIR; then records the new version and removes the staging area.
An interrupted commit is finished by the next fetch of that version (the files already moved
are found in DIR by the check above).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from provisioner.client.placement import STATE_DIR, Placement, read_span
from provisioner.content import crypto
from provisioner.content.layout import check_package_id
from provisioner.errors import CdpError, UsageError
from provisioner.site.keys import replace_private

READ_BLOCK = 1024 * 1024
MODE_BITS = 0o777  # permissions as distributed; set-id and sticky bits are not restored


class DamagedFile(CdpError):
    """A file of the version does not match the manifest (its SHA-256)."""


class Stage:
    """The staging area of one version: files being filled in, and the journal of what is in.

    Every chunk that is in (written now, or found staged and verified) is announced to a
    :class:`_Hasher`, which hashes the files in stream order while the rest arrives."""

    def __init__(self, folder: Path, placement: Placement):
        self.folder = folder
        self.files = folder / "files"
        self.placement = placement
        self.listed = self._read_journal()  # in the journal of an earlier run: to be verified
        self.present: set[str] = set()  # verified in this run
        self._journal = os.open(folder / "journal", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()
        self._hasher: _Hasher | None = None

    def _read_journal(self) -> set[str]:
        try:
            lines = (self.folder / "journal").read_text(encoding="ascii", errors="replace").splitlines()
        except FileNotFoundError:
            return set()
        return {line for line in lines if line in self.placement.places}

    def prepare(self) -> None:
        """Create every file at its final size (keeping what an interrupted run wrote)."""
        for f in self.placement.files:
            path = self.files / f["path"]
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    if os.fstat(fd).st_size != f["size"]:
                        os.ftruncate(fd, f["size"])
                finally:
                    os.close(fd)
            except OSError as exc:
                raise CdpError(f"cannot write the staging area {self.folder}: {exc.strerror}") from None
        self._hasher = _Hasher(self)

    def write(self, chunk_id: str, data: bytes) -> None:
        """Put a verified chunk's bytes everywhere the version has them, then journal it."""
        view = memoryview(data)
        try:
            for offset in self.placement.places[chunk_id]:
                for span in self.placement.spans(offset, len(data)):
                    fd = os.open(self.files / span.path, os.O_WRONLY)
                    try:
                        _pwrite_all(fd, view[span.chunk_offset : span.chunk_offset + span.length], span.file_offset)
                    finally:
                        os.close(fd)
            with self._lock:
                os.write(self._journal, chunk_id.encode("ascii") + b"\n")
        except OSError as exc:
            raise CdpError(f"cannot write the staging area {self.folder}: {exc.strerror}") from None
        self.have(chunk_id)

    def have(self, chunk_id: str) -> None:
        """``chunk_id`` is in the staged files, verified."""
        with self._lock:
            self.present.add(chunk_id)
        self._hasher.mark(chunk_id)

    def read(self, chunk_id: str) -> bytes | None:
        return read_span(self.files, self.placement, self.placement.places[chunk_id][0], self.placement.sizes[chunk_id])

    def missing(self) -> list[str]:
        """The chunks not in yet, in stream order."""
        return [chunk_id for chunk_id in self.placement.places if chunk_id not in self.present]

    def digests(self) -> dict[str, str]:
        """Every file's SHA-256 once every chunk is in."""
        return self._hasher.result()

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.stop()
        if self._journal >= 0:
            os.close(self._journal)
            self._journal = -1


class _Hasher:
    """SHA-256 of every staged file, computed in stream order on its own thread as the
    chunks come in (read back from the page cache), so that no second pass is needed."""

    def __init__(self, stage: Stage):
        self.stage = stage
        placement = stage.placement
        self.pieces = sorted((offset, placement.sizes[chunk_id])
                             for chunk_id, offsets in placement.places.items() for offset in offsets)
        self.index = {offset: at for at, (offset, _) in enumerate(self.pieces)}
        self.ready = [False] * len(self.pieces)
        self.hashes = {f["path"]: hashlib.sha256() for f in placement.files}
        self.cursor = 0
        self.failure: OSError | None = None
        self.stopped = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="cdp-hash", daemon=True)
        self.thread.start()

    def mark(self, chunk_id: str) -> None:
        with self.changed:
            for offset in self.stage.placement.places[chunk_id]:
                self.ready[self.index[offset]] = True
            self.changed.notify()

    def _run(self) -> None:
        while True:
            with self.changed:
                while not self.stopped and self.cursor < len(self.ready) and not self.ready[self.cursor]:
                    self.changed.wait()
                if self.stopped or self.cursor == len(self.ready):
                    return
                end = self.cursor
                while end < len(self.ready) and self.ready[end]:
                    end += 1
                start, self.cursor = self.cursor, end
            try:
                for offset, size in self.pieces[start:end]:
                    self._hash(offset, size)
            except OSError as exc:
                with self.changed:
                    self.failure, self.stopped = exc, True
                    self.changed.notify_all()
                return
            with self.changed:
                self.changed.notify_all()

    def _hash(self, offset: int, size: int) -> None:
        for span in self.stage.placement.spans(offset, size):
            fd = os.open(self.stage.files / span.path, os.O_RDONLY)
            try:
                done = 0
                while done < span.length:
                    block = os.pread(fd, min(READ_BLOCK, span.length - done), span.file_offset + done)
                    if not block:
                        raise OSError(errno.EIO, "staged file shorter than expected")
                    self.hashes[span.path].update(block)
                    done += len(block)
            finally:
                os.close(fd)

    def result(self) -> dict[str, str]:
        with self.changed:
            while not self.stopped and self.cursor < len(self.ready):
                self.changed.wait()
        self.thread.join()
        if self.failure is not None:
            raise CdpError(f"cannot read the staging area {self.stage.folder}: {self.failure.strerror}")
        if self.cursor < len(self.ready):
            raise RuntimeError("the staged files were hashed before every chunk was in")
        return {path: digest.hexdigest() for path, digest in self.hashes.items()}

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify_all()


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class Destination:
    """DIR as a fetch sees it, for one package."""

    def __init__(self, dest: Path, package: str):
        self.dest = Path(dest)
        self.package = check_package_id(package)
        self.home = self.dest / STATE_DIR / "packages" / package
        self.staging = self.home / "staging"

    def check(self) -> None:
        if self.dest.exists() and not self.dest.is_dir():
            raise UsageError(f"--dest {self.dest} is a file, not a folder")

    @contextmanager
    def locked(self) -> Iterator[Destination]:
        """Create DIR and its state folder; hold the lock for the duration."""
        self.check()
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.home / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CdpError(f"cannot write into {self.dest}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CdpError(f"another cdp fetch is writing package {self.package} into {self.dest}") from None
            yield self
        finally:
            os.close(fd)

    def installed(self) -> Placement | None:
        """The version DIR holds (its manifest), or None."""
        try:
            return Placement(json.loads((self.home / "installed.json").read_text(encoding="utf-8")), self.package)
        except (OSError, ValueError, CdpError):
            return None

    def stage(self, placement: Placement) -> Stage:
        """The staging area for ``placement``: kept from an interrupted run of the same version,
        else started afresh."""
        kept = None
        try:
            kept = json.loads((self.staging / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        if kept != placement.manifest:
            self.discard()
            self.staging.mkdir(mode=0o700, parents=True)
            _write_json(self.staging / "manifest.json", placement.manifest)
        stage = Stage(self.staging, placement)
        stage.prepare()
        return stage

    def discard(self) -> None:
        """Remove the staging area (after an integrity failure, or for another version)."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def find(self, chunk_id: str, placement: Placement, stage: Stage, installed: Placement | None,
             id_key: bytes) -> tuple[bytes | None, bool]:
        """``(bytes, already staged)`` of a chunk found on disk and verified, else ``(None, False)``."""
        def verified(data: bytes | None) -> bool:
            return data is not None and hmac.compare_digest(crypto.chunk_id(id_key, data), chunk_id)

        if chunk_id in stage.listed and verified(data := stage.read(chunk_id)):
            return data, True
        size = placement.sizes[chunk_id]
        data = read_span(self.dest, placement, placement.places[chunk_id][0], size, placement.file_sizes)
        if verified(data):
            return data, False
        if installed is not None and chunk_id in installed.places:
            data = read_span(self.dest, installed, installed.places[chunk_id][0], size, installed.file_sizes)
            if verified(data):
                return data, False
        return None, False

    def commit(self, stage: Stage, installed: Placement | None) -> None:
        """Check, fsync and move every staged file into DIR, then record the version."""
        placement = stage.placement
        digests = stage.digests()
        stage.close()
        for f in placement.files:
            if not hmac.compare_digest(digests[f["path"]], f["sha256"]):
                raise DamagedFile(f"file {f['path']} does not match its SHA-256 in the manifest")
            _seal_file(stage.files / f["path"], f["mode"])
        if installed is not None:
            self._remove_stale(installed, placement)  # first: an old file may stand where a folder goes
        folders = {self.dest}
        for f in placement.files:
            target = self.dest / f["path"]
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage.files / f["path"], target)
            except OSError as exc:
                raise CdpError(f"cannot write {target}: {exc.strerror}") from None
            folders.add(target.parent)
        for d in placement.dirs:
            folder = self.dest / d["path"]
            try:
                folder.mkdir(parents=True, exist_ok=True)
                os.chmod(folder, d["mode"] & MODE_BITS)
            except OSError as exc:
                raise CdpError(f"cannot create folder {folder}: {exc.strerror}") from None
        for folder in folders:
            _fsync_dir(folder)
        _write_json(self.home / "installed.json", placement.manifest)
        self.discard()

    def _remove_stale(self, old: Placement, new: Placement) -> None:
        """Remove what the old version had and the new one does not (nothing else of DIR's)."""
        keep = {f["path"] for f in new.files} | {d["path"] for d in new.dirs}
        folders = set()
        for entry in old.files + old.dirs:
            if entry["path"] in keep:
                continue
            path = self.dest / entry["path"]
            if path.is_dir() and not path.is_symlink():
                folders.add(path)
            else:
                path.unlink(missing_ok=True)
            folders.update(p for p in path.parents if p.is_relative_to(self.dest) and p != self.dest)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            if folder.relative_to(self.dest).as_posix() in keep:
                continue
            try:
                folder.rmdir()
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise CdpError(f"cannot remove {folder}: {exc.strerror}") from None


def _seal_file(path: Path, mode: int) -> None:
    """Make a staged, checked file durable and give it its mode."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode & MODE_BITS)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict) -> None:
    """Write ``path`` atomically, mode 0600."""
    replace_private(path, json.dumps(data, ensure_ascii=False))
