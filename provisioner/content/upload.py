"""Upload one package version to one or more distribution points.

The source is read once (:func:`distribute`): each chunk is cut, identified and, if any
distribution point lacks it, encrypted once and added to the open pack of every container that
lacks it; a pack is stored once it holds :data:`PACK_BYTES` (see :mod:`.layout`). A pool of
worker threads does the hashing, encryption and uploads; a semaphore keeps at most
``workers + 4`` chunks in flight and each container has one open pack, so memory stays bounded
whatever the package size.

Per distribution point, in this order: list ``packs/`` once (what storage already has, from
the packs' metadata; the site chunk index is rewritten from it), store the missing chunks in
new packs, then the manifest (with where that distribution point stores each chunk), then
``current``. A failure at any point leaves the previous ``current`` in place; a rerun skips
the chunks whose packs made it. One distribution point failing does not stop the others.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from provisioner.content import crypto
from provisioner.content import manifest as manifest_mod
from provisioner.content.chunking import Piece, cut
from provisioner.content.manifest import Stored
from provisioner.content.keys import PackageKeys
from provisioner.content.layout import check_package_id, check_version
from provisioner.content.store import ChunkIndex, PackageStore
from provisioner.errors import CdpError

Progress = Callable[[int], None]
WORKERS = 8
PACK_BYTES = 4 * 1024 * 1024  # a pack is stored once it holds this many bytes (so at most 8 MiB)
PACK_CHUNKS = 64  # or this many chunks: its metadata stays far below storage's 8 KiB


@dataclass
class Target:
    """One distribution point's container for the package, and its site chunk index."""

    name: str
    store: PackageStore
    index: ChunkIndex | None = None


@dataclass
class UploadResult:
    """The outcome for one distribution point. Byte counts are plaintext chunk bytes."""

    distribution_point: str
    status: str = "pending"  # "uploaded" or "failed"
    bytes_total: int = 0
    bytes_uploaded: int = 0
    chunks_total: int = 0
    chunks_uploaded: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Distribution:
    """The outcome of :func:`distribute`: the manifest (None if the source was not read to the end)."""

    manifest: dict | None
    results: list[UploadResult]
    errors: list[CdpError | None] = field(default_factory=list, repr=False)  # per result

    @property
    def ok(self) -> bool:
        return all(result.status == "uploaded" for result in self.results)


@dataclass
class _Pack:
    """Sealed chunks gathered for one pack blob."""

    pack_id: str = field(default_factory=lambda: secrets.token_hex(16))
    parts: list[bytes] = field(default_factory=list)
    chunks: list[tuple[str, int]] = field(default_factory=list)  # (chunk id, stored size), in order
    size: int = 0  # stored bytes
    plaintext: int = 0


@dataclass
class _Run:
    """The mutable state of one target during a distribution."""

    target: Target
    result: UploadResult
    started: float
    present: dict[str, Stored] = field(default_factory=dict)  # in storage, or placed in a pack by this run
    placed: set[str] = field(default_factory=set)  # put in a pack by this run
    uploaded: dict[str, int] = field(default_factory=dict)  # chunk id -> stored size, stored by this run
    pack: _Pack | None = None  # the open pack
    error: CdpError | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def live(self) -> bool:
        return self.error is None

    def fail(self, exc: CdpError) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
                self.result.status = "failed"
                self.result.error = str(exc)
                self.result.seconds = time.monotonic() - self.started

    def needs(self, chunk_id: str, repair: Collection[str]) -> bool:
        """Whether this chunk must be stored here: storage lacks it, or it is to be repaired."""
        with self.lock:
            if not self.live or chunk_id in self.placed:
                return False
            return chunk_id in repair or chunk_id not in self.present

    def add(self, chunk_id: str, blob: bytes, size: int) -> _Pack | None:
        """Put a sealed chunk in the open pack; the pack if that filled it (to be stored)."""
        with self.lock:
            if chunk_id in self.placed:  # the same content twice in the stream, both in flight
                return None
            pack = self.pack = self.pack or _Pack()
            self.present[chunk_id] = (pack.pack_id, pack.size, len(blob))
            self.placed.add(chunk_id)
            pack.parts.append(blob)
            pack.chunks.append((chunk_id, len(blob)))
            pack.size += len(blob)
            pack.plaintext += size
            if pack.size < PACK_BYTES and len(pack.chunks) < PACK_CHUNKS:
                return None
            self.pack = None
            return pack

    def last_pack(self) -> _Pack | None:
        with self.lock:
            pack, self.pack = self.pack, None
        return pack

    def store(self, pack: _Pack) -> None:
        if not self.live:
            return
        blob = b"".join(pack.parts)
        pack.parts.clear()  # one copy of the pack in memory while it uploads
        try:
            self.target.store.put_pack(pack.pack_id, blob, pack.chunks)
        except CdpError as exc:
            self.fail(exc)
            return
        with self.lock:
            self.uploaded.update(pack.chunks)
            self.result.chunks_uploaded += len(pack.chunks)
            self.result.bytes_uploaded += pack.plaintext


@dataclass(frozen=True)
class PackageVersion:
    """What is being distributed: one version of a package, its content type and the package keys."""

    package: str
    version: str
    content_type: str
    keys: PackageKeys

    def __post_init__(self) -> None:
        check_package_id(self.package)
        check_version(self.version)
        manifest_mod.check_type(self.content_type)
        if self.keys.package_id != self.package:
            raise ValueError("the keys belong to another package")


def distribute(
    source,
    release: PackageVersion,
    targets: Sequence[Target],
    *,
    workers: int = WORKERS,
    progress: Progress | None = None,
    repair: Collection[str] = (),
    make_current: bool = True,
) -> Distribution:
    """Store ``release`` in every target, reading ``source`` once.

    ``source`` is a path or a :class:`manifest.Tree` already scanned (bad input is refused
    before storage is touched). ``progress(n)`` is called in this thread with the plaintext
    bytes of each chunk once every target has it (in storage or in a pack being filled).
    ``repair`` names chunks to store again (in a new pack) even if storage lists them (corrupt).
    ``make_current=False`` stores the version without pointing ``current`` at it (repairing an
    older version).

    A target's storage failure is its result's error. Other exceptions (a bug, an unreadable
    source, one raised by ``progress``) propagate once in-flight uploads have settled; either
    way the previous ``current`` stays wherever the new version is not complete.
    """
    tree = source if isinstance(source, manifest_mod.Tree) else manifest_mod.scan(source)
    started = time.monotonic()
    runs = [_Run(t, UploadResult(t.name, bytes_total=tree.size), started) for t in targets]
    for run in runs:
        _prepare(run)
    try:
        chunks = _store_chunks(tree, release.keys, [r for r in runs if r.live], workers, progress, frozenset(repair))
    finally:
        for run in runs:
            if run.target.index is not None and run.uploaded:
                run.target.index.add(run.uploaded)
    if chunks is None:
        return Distribution(None, [run.result for run in runs], [run.error for run in runs])
    document = manifest_mod.build(
        tree, chunks, package=release.package, version=release.version, content_type=release.content_type
    )
    stored = manifest_mod.stored_chunks(document)
    for run in runs:
        run.result.chunks_total = len(chunks)
        if run.live:
            sealed = manifest_mod.seal(manifest_mod.locate(document, run.present), release.keys)
            _publish(run, release.version, sealed, make_current, stored)
    return Distribution(document, [run.result for run in runs], [run.error for run in runs])


def upload(
    source,
    release: PackageVersion,
    store: PackageStore,
    *,
    index: ChunkIndex | None = None,
    workers: int = WORKERS,
    progress: Progress | None = None,
) -> UploadResult:
    """:func:`distribute` to a single container; its storage failure is raised."""
    outcome = distribute(source, release, [Target(store.location, store, index)], workers=workers, progress=progress)
    if outcome.errors[0] is not None:
        raise outcome.errors[0]
    return outcome.results[0]


def _prepare(run: _Run) -> None:
    """Make sure the container exists and learn what it holds (one LIST); the index follows."""
    try:
        run.target.store.ensure()
        run.present = run.target.store.chunk_locations()
    except CdpError as exc:
        run.fail(exc)
        return
    if run.target.index is not None:
        run.target.index.replace({chunk_id: size for chunk_id, (_, _, size) in run.present.items()})


def _store_chunks(tree, keys, runs, workers, progress, repair) -> list[dict] | None:
    """Read the stream once; returns the chunk list, or None if every target failed."""
    chunks: list[dict] = []
    if not runs:
        return None
    slots = threading.BoundedSemaphore(workers + 4)
    inflight: deque[Future] = deque()

    def store_one(piece: Piece) -> tuple[str, int]:
        chunk_id = crypto.chunk_id(keys.id_key, piece.data)
        todo = [run for run in runs if run.needs(chunk_id, repair)]
        if todo:
            blob = crypto.encrypt_chunk(keys.content_key, chunk_id, piece.data)
            for run in todo:
                full = run.add(chunk_id, blob, piece.size)
                if full is not None:
                    run.store(full)
        return chunk_id, piece.size

    def settle(future: Future) -> None:
        chunk_id, size = future.result()
        chunks.append({"id": chunk_id, "size": size})
        if progress is not None:
            progress(size)

    pool = ThreadPoolExecutor(workers, thread_name_prefix="cdp-upload")
    try:
        with tree.open() as stream:
            for piece in cut(stream):
                if not any(run.live for run in runs):
                    return None
                slots.acquire()
                future = pool.submit(store_one, piece)
                future.add_done_callback(lambda _f: slots.release())
                inflight.append(future)
                del piece
                while inflight and inflight[0].done():
                    settle(inflight.popleft())
        while inflight:
            settle(inflight.popleft())
        last = [pool.submit(run.store, pack) for run in runs if (pack := run.last_pack()) is not None]
        for future in last:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return chunks if any(run.live for run in runs) else None


def _publish(run: _Run, version: str, sealed_manifest: bytes, make_current: bool, stored: dict[str, int]) -> None:
    """The manifest once every chunk is stored, then ``current``: the version becomes visible."""
    try:
        run.target.store.put_manifest(version, sealed_manifest, stored)
        if make_current:
            run.target.store.set_current(version)
    except CdpError as exc:
        run.fail(exc)
        return
    run.result.status = "uploaded"
    run.result.seconds = time.monotonic() - run.started
