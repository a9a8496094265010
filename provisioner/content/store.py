"""One package's container in one distribution point's storage, and the site's index of it.

:class:`PackageStore` speaks to the container through azure-storage-blob's ContainerClient
(the layout is in :mod:`provisioner.content.layout`); it needs the package keys only to
check chunks (:meth:`PackageStore.damaged_chunks`) and to collect garbage, which reads the
manifests to know what is still used and rewrites those whose chunks it moves.
Retries are azure-storage-blob's retry policy: build the client with :func:`client_options`.
Storage failures become :class:`StorageError` (a CdpError with one line, no URL or SAS).

:class:`ChunkIndex` is the site's record (state DB) of which chunks a container holds and
their stored sizes, for status and accounting without a LIST. Storage wins: every upload
starts from a fresh listing and rewrites the index from it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError

from provisioner.content import layout
from provisioner.content.crypto import CorruptContent, decrypt_chunk
from provisioner.content.manifest import Stored, locations, seal, stored_chunks, unseal
from provisioner.errors import CdpError
from provisioner.redaction import redact
from provisioner.site.state import State

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from provisioner.content.keys import PackageKeys


def client_options() -> dict:
    """Keyword arguments for BlobServiceClient/ContainerClient: the retry policy cdp uses.

    azure-storage-blob's ExponentialRetry with a short backoff (1 s, then 1 + 2^n s, with jitter:
    1, 3, 5, 9 s): a request to a stopped storage endpoint fails after about 20 s instead of minutes.
    """
    return {
        "retry_total": 4,
        "initial_backoff": 1,
        "increment_base": 2,
        "random_jitter_range": 1,
        "connection_timeout": 10,
        "read_timeout": 60,
    }


class StorageError(CdpError):
    """Storage did not answer or refused a request (after the retry policy gave up)."""


_changes = threading.Lock()
_changed_at: float | None = None  # when this process last wrote or deleted a current pointer or a manifest


def _changed() -> None:
    global _changed_at
    with _changes:
        _changed_at = time.monotonic()


def wait_until_visible() -> None:
    """Return once every front end answers with the current pointers and manifests this
    process wrote: front ends answer from reads at most :data:`layout.VISIBLE_AFTER` old."""
    with _changes:
        changed = _changed_at
    if changed is not None:
        time.sleep(max(0.0, changed + layout.VISIBLE_AFTER - time.monotonic()))


class MissingContent(CdpError):
    """A blob that should be in storage is not."""


def describe(exc: AzureError) -> str:
    """One line about a storage failure, without URLs, SAS tokens or response bodies."""
    if isinstance(exc, HttpResponseError) and exc.status_code:
        code = getattr(exc, "error_code", None) or exc.reason or ""
        text = f"HTTP {exc.status_code} {code}".strip()
    else:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return redact(text)[:300]


@contextmanager
def _storage(what: str):
    try:
        yield
    except AzureError as exc:
        raise StorageError(f"{what}: {describe(exc)}") from None


@dataclass(frozen=True)
class GarbageCollection:
    deleted: list[str]  # chunk ids no longer stored
    bytes_freed: int
    chunks_kept: int
    packs_deleted: int  # unused, or compacted into a new pack


class PackageStore:
    """The container of one package in one distribution point."""

    def __init__(self, container: ContainerClient):
        self.container = container

    @property
    def location(self) -> str:
        """The container URL (no SAS): the key of this container in the site's chunk index."""
        return self.container.url.split("?", 1)[0]

    def __repr__(self) -> str:
        return f"PackageStore({self.location})"

    def ensure(self) -> None:
        """Create the container if it does not exist yet (private: no public access)."""
        with _storage(f"cannot create container {self.container.container_name}"):
            try:
                self.container.create_container()
            except ResourceExistsError:
                pass

    def delete(self) -> None:
        """Delete the container and everything in it: the whole package on this distribution point."""
        with _storage(f"cannot delete container {self.container.container_name}"):
            try:
                self.container.delete_container()
            except ResourceNotFoundError:
                pass

    def exists(self) -> bool:
        with _storage(f"cannot read container {self.container.container_name}"):
            return self.container.exists()

    # chunks, stored in packs

    def chunk_locations(self) -> dict[str, Stored]:
        """Where storage holds each chunk, from one listing of ``packs/`` with their metadata.
        A chunk in several packs (a repair stores it again) is taken from the newest one; a
        pack whose metadata does not add up to its size is ignored."""
        return self.inventory()[0]

    def chunk_sizes(self) -> dict[str, int]:
        """Every stored chunk id and its stored size (one listing)."""
        return {chunk_id: size for chunk_id, (_, _, size) in self.chunk_locations().items()}

    def pack_sizes(self) -> dict[str, int]:
        """Every pack and its size (one listing)."""
        return self.inventory()[1]

    def inventory(self) -> tuple[dict[str, Stored], dict[str, int]]:
        """:meth:`chunk_locations` and :meth:`pack_sizes` from one listing."""
        where: dict[str, Stored] = {}
        packs = self._packs()
        for blob in sorted(packs, key=lambda b: (b.last_modified, b.name)):
            chunks = layout.parse_pack_metadata(blob.metadata)
            if chunks is None or (chunks[-1][1] + chunks[-1][2]) != blob.size:
                continue
            for chunk_id, offset, size in chunks:
                where[chunk_id] = (layout.pack_id_of(blob.name), offset, size)
        return where, {layout.pack_id_of(blob.name): blob.size for blob in packs}

    def _packs(self) -> list:
        with _storage("cannot list chunks"):
            try:
                blobs = self.container.list_blobs(name_starts_with=layout.PACKS_PREFIX, include=["metadata"])
                return [blob for blob in blobs if layout.pack_id_of(blob.name)]
            except ResourceNotFoundError:
                return []

    def put_pack(self, pack_id: str, blob: bytes, chunks: list[tuple[str, int]]) -> None:
        """Store a pack: the sealed chunks ``(id, stored size)`` back to back in ``blob``."""
        with _storage(f"cannot store pack {pack_id}"):
            self.container.upload_blob(layout.pack_blob(pack_id), blob, overwrite=True, max_concurrency=1,
                                       metadata=layout.pack_metadata(chunks))

    def get_pack(self, pack_id: str) -> bytes:
        return self._get(layout.pack_blob(pack_id), f"pack {pack_id}")

    def delete_packs(self, pack_ids: Iterable[str], workers: int = 8) -> None:
        def delete(pack_id: str) -> None:
            with _storage(f"cannot delete pack {pack_id}"):
                try:
                    self.container.delete_blob(layout.pack_blob(pack_id))
                except ResourceNotFoundError:
                    pass

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(delete, pack_ids))

    # manifests and the current pointer

    def put_manifest(self, version: str, blob: bytes, chunks: dict[str, int] | None = None) -> None:
        """Store a sealed manifest. ``chunks`` (the version's distinct chunks and their stored
        sizes) go first into the version's chunk list, then their sum into the manifest's
        ``stored_bytes`` metadata: the front end counts egress with them, keyless."""
        metadata = None
        if chunks is not None:
            with _storage(f"cannot store the chunk list of {version}"):
                self.container.upload_blob(layout.chunk_list_blob(version), layout.chunk_list(chunks),
                                           overwrite=True)
            metadata = {"stored_bytes": str(sum(chunks.values()))}
        with _storage(f"cannot store the manifest of {version}"):
            self.container.upload_blob(layout.manifest_blob(version), blob, overwrite=True,
                                       metadata=metadata)
        _changed()

    def get_manifest(self, version: str) -> bytes:
        return self._get(layout.manifest_blob(version), f"the manifest of version {version}")

    def versions(self) -> list[str]:
        """The versions with a manifest, sorted by name."""
        with _storage("cannot list versions"):
            try:
                names = list(self.container.list_blob_names(name_starts_with=layout.MANIFESTS_PREFIX))
            except ResourceNotFoundError:
                return []
        return sorted(filter(None, map(layout.version_of, names)))

    def delete_manifest(self, version: str) -> None:
        with _storage(f"cannot delete the manifest of {version}"):
            try:
                self.container.delete_blob(layout.manifest_blob(version))
            except ResourceNotFoundError:
                pass
            else:
                _changed()
            try:
                self.container.delete_blob(layout.chunk_list_blob(version))
            except ResourceNotFoundError:
                pass

    def current(self) -> str | None:
        """The version clients get when they ask for "current", or None."""
        try:
            return layout.parse_current(self._get(layout.CURRENT_BLOB, "the current pointer"))
        except MissingContent:
            return None

    def set_current(self, version: str) -> None:
        with _storage(f"cannot point current at {version}"):
            self.container.upload_blob(layout.CURRENT_BLOB, layout.current_pointer(version), overwrite=True)
        _changed()

    def delete_current(self) -> None:
        with _storage("cannot delete the current pointer"):
            try:
                self.container.delete_blob(layout.CURRENT_BLOB)
            except ResourceNotFoundError:
                return
        _changed()

    # checks that need the package keys

    def damaged_chunks(self, keys: PackageKeys, manifest: dict, workers: int = 8) -> dict[str, str]:
        """Chunks of a manifest that are missing or do not decrypt to their id: {id: "missing"|"corrupt"}.
        Each pack the manifest names is read once; CdpError if the manifest does not say where."""
        sizes = {chunk["id"]: chunk["size"] for chunk in manifest["chunks"]}
        by_pack: dict[str, list[tuple[str, int, int]]] = {}
        for chunk_id, (pack_id, offset, stored) in locations(manifest).items():
            by_pack.setdefault(pack_id, []).append((chunk_id, offset, stored))

        def check(pack_id: str) -> dict[str, str]:
            try:
                pack = memoryview(self.get_pack(pack_id))
            except MissingContent:
                return {chunk_id: "missing" for chunk_id, _, _ in by_pack[pack_id]}
            damaged = {}
            for chunk_id, offset, stored in by_pack[pack_id]:
                if offset + stored > len(pack):
                    damaged[chunk_id] = "missing"
                    continue
                try:
                    plaintext = decrypt_chunk(keys.content_key, chunk_id, pack[offset:offset + stored], keys.id_key)
                except CorruptContent:
                    damaged[chunk_id] = "corrupt"
                    continue
                if len(plaintext) != sizes[chunk_id]:
                    damaged[chunk_id] = "corrupt"
            return damaged

        with ThreadPoolExecutor(workers) as pool:
            return {chunk_id: problem for found in pool.map(check, by_pack) for chunk_id, problem in found.items()}

    def collect_garbage(self, keys: PackageKeys) -> GarbageCollection:
        """Delete what no remaining manifest uses: a pack none of them uses is deleted; a pack
        some still use but that also holds unused chunks is compacted (its used chunks, as
        stored, are copied into a new pack, the manifests that use them are rewritten to say
        so, then the old pack is deleted). A crash in between leaves every manifest whole.

        Every manifest must decrypt (otherwise nothing is deleted). Run it only while no upload
        of the same package is in flight: a version being uploaded has no manifest yet.
        """
        packs = {layout.pack_id_of(blob.name): blob for blob in self._packs()}
        manifests = {version: unseal(self.get_manifest(version), keys, version) for version in self.versions()}
        used: dict[str, set[tuple[str, int]]] = {}  # pack -> (chunk id, offset) some manifest uses
        for document in manifests.values():
            for pack_id, chunks in document.get("packs", {}).items():
                used.setdefault(pack_id, set()).update((chunk_id, offset) for chunk_id, offset in chunks)

        chunks_of = {p: layout.parse_pack_metadata(blob.metadata) or [] for p, blob in packs.items()}
        unused = sorted(set(packs) - set(used))
        partial = sorted(p for p in set(packs) & set(used)
                         if any((c, offset) not in used[p] for c, offset, _ in chunks_of[p]))
        moved: dict[tuple[str, str, int], tuple[str, int]] = {}  # (pack, chunk, offset) -> (new pack, offset)
        new_bytes = 0
        for pack_id in partial:
            data = memoryview(self.get_pack(pack_id))
            keep = [(c, offset, size) for c, offset, size in chunks_of[pack_id] if (c, offset) in used[pack_id]]
            new_id = secrets.token_hex(16)
            placed = 0
            for c, offset, size in keep:
                moved[(pack_id, c, offset)] = (new_id, placed)
                placed += size
            self.put_pack(new_id, b"".join(data[offset:offset + size] for _, offset, size in keep),
                          [(c, size) for c, _, size in keep])
            new_bytes += placed
        for version, document in manifests.items():
            if not set(document.get("packs", {})) & set(partial):
                continue
            relocated: dict[str, list] = {}
            for pack_id, chunks in document["packs"].items():
                for chunk_id, offset in chunks:
                    to_pack, to_offset = moved.get((pack_id, chunk_id, offset), (pack_id, offset))
                    relocated.setdefault(to_pack, []).append([chunk_id, to_offset])
            document = {**document, "packs": relocated}
            self.put_manifest(version, seal(document, keys), stored_chunks(document))
        gone = unused + partial
        self.delete_packs(gone)
        kept = {c for p in set(packs) - set(gone) for c, _, _ in chunks_of[p]} | {c for _, c, _ in moved}
        deleted = {c for p in gone for c, _, _ in chunks_of[p]} - kept
        return GarbageCollection(sorted(deleted), sum(packs[p].size for p in gone) - new_bytes, len(kept),
                                 len(gone))

    def _get(self, name: str, what: str) -> bytes:
        with _storage(f"cannot read {what}"):
            try:
                return self.container.download_blob(name, max_concurrency=1).readall()
            except ResourceNotFoundError:
                raise MissingContent(f"{what} is not in storage") from None


class ChunkIndex:
    """The site's record of the chunks one container holds (state DB table ``chunk_index``)."""

    def __init__(self, state: State, location: str):
        self.state = state
        self.location = location

    def sizes(self) -> dict[str, int]:
        rows = self.state.query(
            "SELECT chunk_id, stored_bytes FROM chunk_index WHERE location = ?", (self.location,)
        )
        return {row["chunk_id"]: row["stored_bytes"] for row in rows}

    def stored_bytes(self) -> int:
        rows = self.state.query(
            "SELECT coalesce(sum(stored_bytes), 0) FROM chunk_index WHERE location = ?", (self.location,)
        )
        return rows[0][0]

    @staticmethod
    def stored_bytes_under(state: State, url_prefix: str) -> int:
        """What the index holds under a URL prefix: a storage account's blob endpoint, say."""
        rows = state.query(
            "SELECT coalesce(sum(stored_bytes), 0) FROM chunk_index WHERE substr(location, 1, ?) = ?",
            (len(url_prefix), url_prefix),
        )
        return rows[0][0]

    def replace(self, listing: dict[str, int]) -> None:
        """Make the index what storage listed (storage wins)."""
        with self.state.tx() as db:
            db.execute("DELETE FROM chunk_index WHERE location = ?", (self.location,))
            db.executemany(
                "INSERT INTO chunk_index(location, chunk_id, stored_bytes) VALUES (?, ?, ?)",
                [(self.location, chunk_id, size) for chunk_id, size in listing.items()],
            )

    def add(self, stored: dict[str, int]) -> None:
        with self.state.tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO chunk_index(location, chunk_id, stored_bytes) VALUES (?, ?, ?)",
                [(self.location, chunk_id, size) for chunk_id, size in stored.items()],
            )

    def discard(self, chunk_ids: Iterable[str]) -> None:
        with self.state.tx() as db:
            db.executemany(
                "DELETE FROM chunk_index WHERE location = ? AND chunk_id = ?",
                [(self.location, chunk_id) for chunk_id in chunk_ids],
            )
