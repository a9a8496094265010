"""One package's container in one distribution point's storage, and the site's index of it.

:class:`PackageStore` speaks to the container through azure-storage-blob's ContainerClient
(the layout is in :mod:`provisioner.content.layout`); it never sees a key, except
:meth:`PackageStore.collect_garbage`, which must read manifests to know what is still used.
Retries are azure-storage-blob's retry policy: build the client with :func:`client_options`.
Storage failures become :class:`StorageError` (a CdpError with one line, no URL or SAS).

:class:`ChunkIndex` is the site's record (state DB) of which chunks a container holds and
their stored sizes, for status and accounting without a LIST. Storage wins: every upload
starts from a fresh listing and rewrites the index from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError

from provisioner.content import layout
from provisioner.content.crypto import CorruptContent, decrypt_chunk
from provisioner.content.manifest import unseal
from provisioner.errors import CdpError
from provisioner.site.state import State

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

    from provisioner.content.keys import PackageKeys

_SAS = re.compile(r"(sig|se|sp|sv|sr|st|skoid|sktid|skt|ske|sks|skv)=[^&\s'\"]+", re.I)


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


class MissingContent(CdpError):
    """A blob that should be in storage is not."""


def describe(exc: AzureError) -> str:
    """One line about a storage failure, without URLs, SAS tokens or response bodies."""
    if isinstance(exc, HttpResponseError) and exc.status_code:
        code = getattr(exc, "error_code", None) or exc.reason or ""
        text = f"HTTP {exc.status_code} {code}".strip()
    else:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return _SAS.sub(r"\1=***", text)[:300]


@contextmanager
def _storage(what: str):
    try:
        yield
    except AzureError as exc:
        raise StorageError(f"{what}: {describe(exc)}") from None


@dataclass(frozen=True)
class GarbageCollection:
    deleted: list[str]
    bytes_freed: int
    chunks_kept: int


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

    # chunks

    def chunk_sizes(self) -> dict[str, int]:
        """Every stored chunk id and its stored size, from one listing of ``chunks/``."""
        with _storage("cannot list chunks"):
            try:
                blobs = list(self.container.list_blobs(name_starts_with=layout.CHUNKS_PREFIX))
            except ResourceNotFoundError:
                return {}
        found = ((layout.chunk_id_of(blob.name), blob.size) for blob in blobs)
        return {chunk_id: size for chunk_id, size in found if chunk_id}

    def put_chunk(self, chunk_id: str, blob: bytes, *, overwrite: bool = False) -> bool:
        """Store an encrypted chunk. False if it was already there (and ``overwrite`` is off)."""
        with _storage(f"cannot store chunk {chunk_id}"):
            try:
                self.container.upload_blob(layout.chunk_blob(chunk_id), blob, overwrite=overwrite, max_concurrency=1)
            except ResourceExistsError:
                return False
        return True

    def get_chunk(self, chunk_id: str) -> bytes:
        return self._get(layout.chunk_blob(chunk_id), f"chunk {chunk_id}")

    def delete_chunks(self, chunk_ids: Iterable[str], workers: int = 8) -> None:
        def delete(chunk_id: str) -> None:
            with _storage(f"cannot delete chunk {chunk_id}"):
                try:
                    self.container.delete_blob(layout.chunk_blob(chunk_id))
                except ResourceNotFoundError:
                    pass

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(delete, chunk_ids))

    # manifests and the current pointer

    def put_manifest(self, version: str, blob: bytes, stored_bytes: int | None = None) -> None:
        """Store a sealed manifest. ``stored_bytes`` (the stored size of the version's distinct
        chunks) goes into the blob's metadata: the front end counts egress with it, keyless."""
        metadata = {"stored_bytes": str(stored_bytes)} if stored_bytes is not None else None
        with _storage(f"cannot store the manifest of {version}"):
            self.container.upload_blob(layout.manifest_blob(version), blob, overwrite=True,
                                       metadata=metadata)

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

    def current(self) -> str | None:
        """The version clients get when they ask for "current", or None."""
        try:
            return layout.parse_current(self._get(layout.CURRENT_BLOB, "the current pointer"))
        except MissingContent:
            return None

    def set_current(self, version: str) -> None:
        with _storage(f"cannot point current at {version}"):
            self.container.upload_blob(layout.CURRENT_BLOB, layout.current_pointer(version), overwrite=True)

    def delete_current(self) -> None:
        with _storage("cannot delete the current pointer"):
            try:
                self.container.delete_blob(layout.CURRENT_BLOB)
            except ResourceNotFoundError:
                pass

    # checks that need the package keys

    def damaged_chunks(self, keys: PackageKeys, chunks: list[dict], workers: int = 8) -> dict[str, str]:
        """Chunks of a manifest that are missing or do not decrypt to their id: {id: "missing"|"corrupt"}."""

        def check(chunk: dict) -> tuple[str, str | None]:
            try:
                plaintext = decrypt_chunk(keys.content_key, chunk["id"], self.get_chunk(chunk["id"]), keys.id_key)
            except MissingContent:
                return chunk["id"], "missing"
            except CorruptContent:
                return chunk["id"], "corrupt"
            return chunk["id"], None if len(plaintext) == chunk["size"] else "corrupt"

        with ThreadPoolExecutor(workers) as pool:
            return {chunk_id: problem for chunk_id, problem in pool.map(check, chunks) if problem}

    def collect_garbage(self, keys: PackageKeys) -> GarbageCollection:
        """Delete the chunks no remaining manifest uses.

        Every manifest must decrypt (otherwise nothing is deleted). Run it only while no upload
        of the same package is in flight: a version being uploaded has no manifest yet.
        """
        stored = self.chunk_sizes()
        used: set[str] = set()
        for version in self.versions():
            used.update(chunk["id"] for chunk in unseal(self.get_manifest(version), keys, version)["chunks"])
        unused = sorted(set(stored) - used)
        self.delete_chunks(unused)
        return GarbageCollection(unused, sum(stored[c] for c in unused), len(stored) - len(unused))

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
