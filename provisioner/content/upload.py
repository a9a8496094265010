"""Upload one package version to one or more distribution points.

The source is read once (:func:`distribute`): each chunk is cut, identified and, if any
distribution point lacks it, encrypted once and stored in every container that lacks it.
A pool of worker threads does the hashing, encryption and uploads; a semaphore keeps at most
``workers + 4`` chunks in flight, so memory stays bounded whatever the package size.

Per distribution point, in this order: list ``chunks/`` once (what storage already has;
the site chunk index is rewritten from it), store the missing chunks, then the manifest, then
``current``. A failure at any point leaves the previous ``current`` in place; a rerun skips
the chunks that made it. One distribution point failing does not stop the others.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from provisioner.content import crypto
from provisioner.content import manifest as manifest_mod
from provisioner.content.chunking import Piece, cut
from provisioner.content.keys import PackageKeys
from provisioner.content.layout import check_package_id, check_version
from provisioner.content.store import ChunkIndex, PackageStore
from provisioner.errors import CdpError

Progress = Callable[[int], None]
WORKERS = 8


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
class _Run:
    """The mutable state of one target during a distribution."""

    target: Target
    result: UploadResult
    started: float
    present: dict[str, int] = field(default_factory=dict)  # chunk id -> stored size
    uploaded: dict[str, int] = field(default_factory=dict)  # written by this run
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

    def plan(self, chunk_id: str, stored_size: int, repair: Collection[str]) -> bool | None:
        """None: nothing to do; False: upload it; True: upload it over a damaged blob."""
        if not self.live:
            return None
        with self.lock:
            have = self.present.get(chunk_id)
        if chunk_id in repair and chunk_id not in self.uploaded:
            return True
        if have == stored_size:
            return None
        return have is not None

    def put(self, chunk_id: str, blob: bytes, size: int, overwrite: bool) -> None:
        try:
            wrote = self.target.store.put_chunk(chunk_id, blob, overwrite=overwrite)
        except CdpError as exc:
            self.fail(exc)
            return
        with self.lock:
            self.present[chunk_id] = len(blob)
            self.uploaded[chunk_id] = len(blob)
            if wrote:
                self.result.chunks_uploaded += 1
                self.result.bytes_uploaded += size


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
    bytes of each chunk once every target has it. ``repair`` names chunks to upload again even
    if storage lists them (a corrupt blob of the right size). ``make_current=False`` stores the
    version without pointing ``current`` at it (repairing an older version).

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
    sealed = manifest_mod.seal(document, release.keys)
    distinct = {chunk["id"]: chunk["size"] for chunk in chunks}
    stored_bytes = sum(crypto.encrypted_size(size) for size in distinct.values())
    for run in runs:
        run.result.chunks_total = len(chunks)
        if run.live:
            _publish(run, release.version, sealed, make_current, stored_bytes)
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
        run.present = run.target.store.chunk_sizes()
    except CdpError as exc:
        run.fail(exc)
        return
    if run.target.index is not None:
        run.target.index.replace(run.present)


def _store_chunks(tree, keys, runs, workers, progress, repair) -> list[dict] | None:
    """Read the stream once; returns the chunk list, or None if every target failed."""
    chunks: list[dict] = []
    if not runs:
        return None
    slots = threading.BoundedSemaphore(workers + 4)
    inflight: deque[Future] = deque()

    def store_one(piece: Piece) -> tuple[str, int]:
        chunk_id = crypto.chunk_id(keys.id_key, piece.data)
        stored = crypto.encrypted_size(piece.size)
        todo = [(run, overwrite) for run in runs if (overwrite := run.plan(chunk_id, stored, repair)) is not None]
        if todo:
            blob = crypto.encrypt_chunk(keys.content_key, chunk_id, piece.data)
            for run, overwrite in todo:
                run.put(chunk_id, blob, piece.size, overwrite)
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
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return chunks if any(run.live for run in runs) else None


def _publish(run: _Run, version: str, sealed_manifest: bytes, make_current: bool, stored_bytes: int) -> None:
    """The manifest once every chunk is stored, then ``current``: the version becomes visible."""
    try:
        run.target.store.put_manifest(version, sealed_manifest, stored_bytes)
        if make_current:
            run.target.store.set_current(version)
    except CdpError as exc:
        run.fail(exc)
        return
    run.result.status = "uploaded"
    run.result.seconds = time.monotonic() - run.started
