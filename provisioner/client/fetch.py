"""``cdp fetch``: download, verify, decrypt and install one package version into a folder.

For each source in the bundle's order until one completes the version:

1. ask it for a location (:mod:`provisioner.client.sources`); the first location fixes the
   version, later sources are asked for that same version;
2. download its manifest and decrypt it (the GCM tag and the associated data bind it to the
   package and version); it says where this source stores each chunk (which pack, at which
   offset). The first time only: stage the version (:mod:`.staging`) and look for every chunk
   on disk first: an interrupted run's staging area, DIR's files (delta). A later source's
   manifest must describe the same content;
3. download the chunks still missing, in parallel (``workers`` threads), as ranged GETs of
   consecutive chunks of one pack, at most :data:`RANGE_BYTES` each and ``2 * workers`` ranges
   in memory; each chunk is checked (GCM tag, then its keyed id) before its bytes are written
   into the staging area.

A pack that is gone (a ``content remove`` compacted it after the manifest was read) makes the
fetch read that source's manifest again, once, and go on. A source that stops answering (after
azure-core's retries), lacks a chunk, or serves a damaged one is reported and the next source
continues where it stopped: what is staged stays. The location request says which version DIR
holds, so that the source counts (egress) only the chunks DIR lacks.
Once every chunk is in, each file's SHA-256 is checked and the files are moved into DIR.
If no source serves an intact copy, the fetch fails naming the damaged file and its chunk, the
staging area is removed, and DIR is left as it was. An interruption (kill, network down
everywhere) keeps the staging area, so the next run downloads only what is missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from provisioner.access import Bundle
from provisioner.client.blobs import BlobUnavailable, Container
from provisioner.client.placement import Placement
from provisioner.client.sources import Attempts, Location, Refused, Report, ask, trust
from provisioner.client.staging import DamagedFile, Destination, Stage
from provisioner.content import crypto
from provisioner.content.keys import PackageKeys
from provisioner.content.layout import check_package_id, check_version, manifest_blob, pack_blob
from provisioner.content.manifest import Stored, content, locations, unseal
from provisioner.errors import CdpError

WORKERS = 4  # concurrent GETs: storage is the limit here, more threads only add contention
RANGE_BYTES = 9 * 1024 * 1024  # a GET reads up to a whole pack (Azurite reads a range from its start)
Progress = Callable[[int, int], None]  # (bytes just done, total bytes of the version)


@dataclass
class FetchResult:
    package: str
    version: str
    source: str  # the distribution point that completed the version
    files: int
    bytes_total: int  # the version's content (plaintext)
    bytes_downloaded: int  # what came over the network: manifest and chunks as stored
    seconds: float
    dest: str

    def to_json(self) -> dict:
        return asdict(self)


class SourceDown(CdpError):
    """This source stopped serving in the middle (storage unreachable, a blob missing)."""


class PackGone(SourceDown):
    """A pack the manifest names is not in storage: a removal may have compacted it since."""


class DamagedChunk(CdpError):
    """A chunk from this source failed its checks; names the files it belongs to."""


@dataclass
class _Run:
    """One fetch in progress."""

    keys: PackageKeys
    destination: Destination
    workers: int
    progress: Progress | None
    placement: Placement | None = None
    where: dict[str, Stored] = field(default_factory=dict)  # of the source being read
    stage: Stage | None = None
    installed: Placement | None = None
    downloaded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def done(self, plaintext_bytes: int, stored_bytes: int = 0) -> None:
        with self.lock:
            self.downloaded += stored_bytes
        if self.progress is not None:
            self.progress(plaintext_bytes, self.placement.size)


def fetch(bundle: Bundle, package: str, dest: Path, version: str | None = None, *,
          report: Report = lambda line: None, progress: Progress | None = None,
          workers: int = WORKERS) -> FetchResult:
    """Fetch ``package`` (``version``, else the current one) into ``dest`` from the first
    source that can serve it all; CdpError naming each source's reason if none can."""
    started = time.monotonic()
    check_package_id(package)
    if version is not None:
        check_version(version)
    run = _Run(bundle.keys_for(package), Destination(dest, package), workers, progress)
    run.destination.check()
    attempts = Attempts(bundle.sources, report)
    held_version = run.destination.installed()  # read again under the lock; here a hint for egress
    have = held_version.version if held_version is not None else None
    locked = False
    with ExitStack() as held, trust(bundle) as verify:
        for source in attempts:
            try:
                location = ask(source, bundle.token, package, version, verify(source), have)
            except Refused as exc:
                attempts.failed(source, exc.reason, exc.status)
                continue
            version = location.version
            if not locked:  # DIR is touched only once a source serves
                held.enter_context(run.destination.locked())
                held.callback(_close, run)
                locked = True
            try:
                with Container(location.container_url, location.sas, verify(source)) as container:
                    _begin(run, container, location, report)
                    try:
                        _download(run, container)
                    except PackGone:  # moved by a removal since the manifest was read: read it again
                        _begin(run, container, location, report)
                        _download(run, container)
            except SourceDown as exc:
                attempts.failed(source, str(exc))
                continue
            except DamagedChunk as exc:
                attempts.failed(source, str(exc), damaged=True)
                continue
            try:
                run.destination.commit(run.stage, run.installed)
            except DamagedFile as exc:  # raised before anything in DIR is touched
                run.destination.discard()
                raise DamagedFile(f"{exc}; nothing in {dest} was changed") from None
            return FetchResult(package, version, source.distribution_point, len(run.placement.files),
                               run.placement.size, run.downloaded, round(time.monotonic() - started, 3),
                               str(Path(dest).resolve()))
        if attempts.damaged:
            _close(run)
            run.destination.discard()
            reasons = "; ".join(f"{f.source.distribution_point}: {f.reason}" for f in attempts.failures)
            raise CdpError(f"cannot fetch {package} {version}: {reasons}; nothing in {dest} was changed")
    raise attempts.error(package, version, bundle)


def _close(run: _Run) -> None:
    if run.stage is not None:
        run.stage.close()


def _begin(run: _Run, container: Container, location: Location, report: Report) -> None:
    """Get and check this source's manifest: where it stores each chunk. The first time, stage
    the version and take every chunk found on disk."""
    what = f"the manifest of {location.package} {location.version}"
    blob = _get(container, manifest_blob(location.version), what)
    try:
        manifest = unseal(blob, run.keys, location.version)
        where = locations(manifest)
    except ValueError:
        raise DamagedChunk(f"{what} is not JSON") from None
    except CdpError as exc:  # does not decrypt (CorruptContent), another format, or no locations
        raise DamagedChunk(str(exc)) from None
    run.downloaded += len(blob)
    if run.placement is not None:
        if content(manifest) != run.placement.manifest:
            raise DamagedChunk(f"{what} differs from the one the first source served")
        run.where = where
        return
    run.placement = Placement(manifest, location.package)
    run.where = where
    run.installed = run.destination.installed()
    run.stage = run.destination.stage(run.placement)

    def look(chunk_id: str) -> None:
        data, staged = run.destination.find(chunk_id, run.placement, run.stage, run.installed, run.keys.id_key)
        if data is None:
            return
        if staged:
            run.stage.have(chunk_id)
        else:
            run.stage.write(chunk_id, data)
        run.done(len(data) * len(run.placement.places[chunk_id]))

    _each(list(run.placement.places), look, run.workers)
    missing = run.stage.missing()
    need = sum(run.placement.sizes[c] for c in missing)
    report(f"fetching {location.package} {location.version} from {location.source.distribution_point}:"
           f" {len(run.placement.files)} files, {run.placement.size:,} bytes; {len(missing)} of"
           f" {len(run.placement.places)} chunks ({need:,} bytes) to download")


def _download(run: _Run, container: Container) -> None:
    """Download, check and stage every chunk not staged yet, a range of a pack per GET."""
    def get(span: list[str]) -> None:
        pack_id, start, _ = run.where[span[0]]
        length = sum(run.where[chunk_id][2] for chunk_id in span)
        blob = _get(container, pack_blob(pack_id), f"chunk {span[0]}", start, length, PackGone)
        view = memoryview(blob)
        for chunk_id in span:
            _, offset, stored = run.where[chunk_id]
            if offset - start + stored > len(blob):  # the pack ends early
                raise SourceDown(f"chunk {chunk_id} is not in its storage")
            at = offset - start
            try:
                data = crypto.decrypt_chunk(run.keys.content_key, chunk_id, view[at:at + stored], run.keys.id_key)
            except crypto.CorruptContent as exc:
                raise _damaged(run, chunk_id, str(exc).split(" is damaged: ", 1)[-1]) from None
            size = run.placement.sizes[chunk_id]
            if len(data) != size:
                raise _damaged(run, chunk_id, f"{len(data)} bytes where the manifest says {size}")
            run.stage.write(chunk_id, data)
            run.done(len(data) * len(run.placement.places[chunk_id]), stored)

    _each(_ranges(run.stage.missing(), run.where, run.placement), get, run.workers)


def _ranges(missing: list[str], where: dict[str, Stored], placement: Placement) -> list[list[str]]:
    """The missing chunks as runs of consecutive chunks of one pack, each at most RANGE_BYTES
    (or one chunk), in the order of their first chunk in the stream (so hashing can follow)."""
    spans: list[list[str]] = []
    end: tuple[str, int] | None = None  # (pack, offset) where the last span ends
    size = 0
    for chunk_id in sorted(missing, key=lambda c: where[c][:2]):
        pack_id, offset, stored = where[chunk_id]
        if end == (pack_id, offset) and size + stored <= RANGE_BYTES:
            spans[-1].append(chunk_id)
            size += stored
        else:
            spans.append([chunk_id])
            size = stored
        end = (pack_id, offset + stored)
    return sorted(spans, key=lambda span: min(placement.places[c][0] for c in span))


def _damaged(run: _Run, chunk_id: str, why: str) -> DamagedChunk:
    files = ", ".join(run.placement.files_of(chunk_id))
    return DamagedChunk(f"file {files} is damaged (chunk {chunk_id}: {why})")


def _get(container: Container, name: str, what: str, offset: int = 0, length: int | None = None,
         gone: type[SourceDown] = SourceDown) -> bytearray:
    try:
        return container.get(name, offset, length)
    except BlobUnavailable as exc:
        raise (gone(f"{what} is not in its storage") if exc.missing else SourceDown(str(exc))) from None


def _each(items: Iterable, job: Callable, workers: int) -> None:
    """Run ``job`` on each item in a pool, at most ``2 * workers`` at a time; stop submitting at
    the first failure, let the running ones finish, and raise that failure."""
    failures: list[BaseException] = []
    slots = threading.BoundedSemaphore(2 * workers)

    def settled(future: Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            failures.append(future.exception())
        slots.release()

    with ThreadPoolExecutor(workers, thread_name_prefix="cdp-fetch") as pool:
        for item in items:
            slots.acquire()
            if failures:
                slots.release()
                break
            pool.submit(job, item).add_done_callback(settled)
    if failures:
        raise failures[0]
