"""Where a package version lives, and the read-only SAS that lets one client read it.

Most location requests are served from memory: what the front end read of a package (its
``current`` pointer; whether a manifest exists, and the bytes a client downloads for it) is
answered for :data:`layout.VISIBLE_AFTER` seconds from the start of the read, so what a
``distribute`` or ``content remove`` that has returned wrote is what every client gets (they
wait that long after their last write). A busy entry is read again in the background before
it expires, and concurrent requests for an entry that is not there share one storage call
(:class:`TtlCache`). Egress counts that storage does not change under a version (what a
client holding an older version lacks; the packs listed for versions uploaded without
``stored_bytes``) are kept for :data:`COUNTS_TTL`. A SAS depends only on the container and
the second it is signed in, so each container's SAS is signed at most once a second.

The SAS is a container SAS with *read* permission only: a client reads ``manifests/<version>``
and then the chunks the manifest names, so it never needs to list. HTTPS only, valid from a
minute back (clock skew) until the configured lifetime, scoped to one package's container.
It is signed with the account key locally and with a user delegation key (the web app's
managed identity) on Azure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Awaitable, Callable, Generic, TypeVar

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from provisioner.content import layout
from provisioner.errors import CdpError
from provisioner.frontend.settings import Settings

CACHE_ENTRIES = 10_000
# Egress counts that storage reads alone do not keep current are kept this long: what a client
# holding one version downloads for another (the two versions' chunk lists, which an upload
# never changes), and the packs of a package listed for versions uploaded without stored_bytes.
COUNTS_TTL = 300.0
CLOCK_SKEW = timedelta(minutes=1)
# A user delegation key is asked for this long (Azure's most) and renewed while it still
# outlives every SAS signed with it.
DELEGATION_KEY_LIFETIME = timedelta(days=7)
DELEGATION_KEY_MARGIN = timedelta(minutes=5)
STORED_BYTES_METADATA = "stored_bytes"
_READ = ContainerSasPermissions(read=True)

K = TypeVar("K")
V = TypeVar("V")


class NotFound(CdpError):
    """Unknown package or version: HTTP 404."""


class StorageUnavailable(CdpError):
    """Storage did not answer or refused: HTTP 503 (the client tries its next source)."""


@dataclass(frozen=True)
class Location:
    package: str
    version: str
    container_url: str
    sas: str
    expires_at: str  # ISO 8601, UTC
    bytes: int | None  # what the client downloads (egress counts it): manifest and chunks it lacks

    def to_json(self, distribution_point: str) -> dict[str, Any]:
        return {
            "distribution_point": distribution_point,
            "package": self.package,
            "version": self.version,
            "container_url": self.container_url,
            "sas": self.sas,
            "expires_at": self.expires_at,
            "manifest": layout.MANIFESTS_PREFIX + self.version,
            "bytes": self.bytes,
        }


class TtlCache(Generic[K, V]):
    """An in-memory cache whose loads are shared by concurrent callers.

    A value ``loader(key)`` returned is answered until ``ttl`` seconds after the load began, so
    never more than ``ttl`` seconds after storage was asked for it. A key asked for in the
    second half of that time is loaded again in the background, so a busy key is always fresh
    and its callers never wait; a key that expired is loaded again while its callers wait for
    that one load. An exception is not cached.
    """

    def __init__(self, loader: Callable[[K], Awaitable[V]], ttl: float,
                 clock: Callable[[], float] = time.monotonic):
        self._loader = loader
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[K, tuple[float, V]] = {}  # key -> (when its load began, value)
        self._loading: dict[K, asyncio.Future] = {}

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            age = self._clock() - entry[0]
            if age < self._ttl:
                if age >= self._ttl / 2:
                    self._load_once(key)
                return entry[1]
        return await asyncio.shield(self._load_once(key))

    def _load_once(self, key: K) -> asyncio.Future:
        pending = self._loading.get(key)
        if pending is None:
            pending = self._loading[key] = asyncio.ensure_future(self._load(key))
            pending.add_done_callback(_retrieve)
        return pending

    async def _load(self, key: K) -> V:
        try:
            started = self._clock()
            value = await self._loader(key)
            if len(self._entries) >= CACHE_ENTRIES:
                self._entries = {k: e for k, e in self._entries.items() if started - e[0] < self._ttl}
                if len(self._entries) >= CACHE_ENTRIES:
                    self._entries.clear()
            self._entries[key] = (started, value)
            return value
        finally:
            del self._loading[key]

    def __len__(self) -> int:
        return len(self._entries)


def _retrieve(future: asyncio.Future) -> None:
    """Mark a background load's failure as seen (a waiting caller reports it)."""
    if not future.cancelled():
        future.exception()


class SasSigner:
    """Signs read-only container SAS: with the account key, or a user delegation key."""

    def __init__(self, settings: Settings, service: Any, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.service = service  # azure.storage.blob.aio.BlobServiceClient
        self.clock = clock
        self._delegation_key = None
        self._delegation_renew_at = datetime.min.replace(tzinfo=timezone.utc)
        self._delegation_lock = asyncio.Lock()
        self._signed: dict[str, tuple[int, str, str]] = {}

    async def sign(self, container: str) -> tuple[str, str]:
        """``(query string without '?', expiry in ISO 8601)`` for reading ``container``."""
        second = int(self.clock())
        cached = self._signed.get(container)
        if cached is not None and cached[0] == second:
            return cached[1], cached[2]
        now = datetime.fromtimestamp(second, timezone.utc)
        expiry = now + timedelta(seconds=self.settings.sas_ttl)
        credential: dict[str, Any]
        if self.settings.uses_account_key:
            credential = {"account_key": self.settings.storage_key}
        else:
            credential = {"user_delegation_key": await self._user_delegation_key(now)}
        sas = generate_container_sas(
            self.settings.storage_account, container, permission=_READ,
            start=now - CLOCK_SKEW, expiry=expiry, protocol="https", **credential,
        )
        expires_at = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        self._signed[container] = (second, sas, expires_at)
        return sas, expires_at

    async def _user_delegation_key(self, now: datetime):
        if self._delegation_key is not None and now < self._delegation_renew_at:
            return self._delegation_key
        async with self._delegation_lock:
            if self._delegation_key is None or now >= self._delegation_renew_at:
                start = now - CLOCK_SKEW
                try:
                    key = await self.service.get_user_delegation_key(start, start + DELEGATION_KEY_LIFETIME)
                except AzureError as exc:
                    raise StorageUnavailable(f"cannot get a user delegation key: {describe(exc)}") from None
                self._delegation_key = key
                self._delegation_renew_at = (start + DELEGATION_KEY_LIFETIME - DELEGATION_KEY_MARGIN
                                             - timedelta(seconds=self.settings.sas_ttl))
        return self._delegation_key


class Locator:
    """Resolves ``(package, version or None)`` to a :class:`Location`."""

    def __init__(self, settings: Settings, service: Any, signer: SasSigner):
        self.settings = settings
        self.service = service
        self.signer = signer
        self._current: TtlCache[str, str | None] = TtlCache(self._load_current, layout.VISIBLE_AFTER)
        self._manifests: TtlCache[tuple[str, str], tuple[int, int | None] | None] = TtlCache(
            self._load_manifest, layout.VISIBLE_AFTER)
        self._deltas: TtlCache[tuple[str, str, str], int | None] = TtlCache(self._load_delta, COUNTS_TTL)
        self._pack_bytes: TtlCache[str, int | None] = TtlCache(self._list_packs, COUNTS_TTL)

    async def locate(self, package: str, version: str | None, have: str | None = None) -> Location:
        """``have``: the version the client says it holds, so that its location counts only
        the chunks it lacks (a client's word: it changes the count, never what it can read)."""
        container = _container(package)
        if version is None:
            version = await self._current.get(package)
            if version is None:
                raise NotFound(f"package {package} has no current version on this distribution point")
        elif not _valid_version(version):
            raise NotFound(f"version {version!r} of package {package} is not on this distribution point")
        manifest = await self._manifests.get((package, version))
        if manifest is None:
            raise NotFound(f"version {version} of package {package} is not on this distribution point")
        manifest_bytes, chunk_bytes = manifest
        if have is not None and _valid_version(have):
            delta = await self._deltas.get((package, version, have))
            chunk_bytes = chunk_bytes if delta is None else delta
        sas, expires_at = await self.signer.sign(container)
        return Location(package, version, self.settings.container_url(container), sas, expires_at,
                        None if chunk_bytes is None else manifest_bytes + chunk_bytes)

    async def _load_current(self, package: str) -> str | None:
        blob = self.service.get_blob_client(_container(package), layout.CURRENT_BLOB)
        try:
            stream = await blob.download_blob()
            body = await stream.readall()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StorageUnavailable(f"cannot read the current version of {package}: {describe(exc)}") from None
        try:
            return layout.parse_current(body)
        except CdpError:
            raise StorageUnavailable(f"the current pointer of package {package} is damaged") from None

    async def _load_manifest(self, key: tuple[str, str]) -> tuple[int, int | None] | None:
        """The version's manifest size and its chunks' stored bytes (None if unknown), or None
        if the version is not here."""
        package, version = key
        container = _container(package)
        manifest = self.service.get_blob_client(container, layout.manifest_blob(version))
        try:
            props = await manifest.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StorageUnavailable(f"cannot read version {version} of {package}: {describe(exc)}") from None
        return props.size, await self._chunk_bytes(container, props.metadata or {})

    async def _load_delta(self, key: tuple[str, str, str]) -> int | None:
        """The stored bytes of the chunks of ``version`` that ``have`` lacks; None if either
        chunk list is missing (uploads before chunk lists) or unreadable: then all are counted."""
        package, version, have = key
        wanted, held = await asyncio.gather(self._chunk_list(package, version), self._chunk_list(package, have))
        if wanted is None or held is None:
            return None
        return sum(size for chunk_id, size in wanted.items() if chunk_id not in held)

    async def _chunk_list(self, package: str, version: str) -> dict[str, int] | None:
        blob = self.service.get_blob_client(_container(package), layout.chunk_list_blob(version))
        try:
            stream = await blob.download_blob()
            return layout.parse_chunk_list(await stream.readall())
        except AzureError:
            return None

    async def _chunk_bytes(self, container: str, metadata: dict[str, str]) -> int | None:
        """The stored bytes of the version's chunks: the manifest's ``stored_bytes`` metadata,
        else (older uploads) every pack of the package, an upper bound."""
        raw = {k.lower(): v for k, v in metadata.items()}.get(STORED_BYTES_METADATA)
        if raw is not None and raw.isdigit():
            return int(raw)
        return await self._pack_bytes.get(container)

    async def _list_packs(self, container: str) -> int | None:
        total = 0
        try:
            async for blob in self.service.get_container_client(container).list_blobs(
                    name_starts_with=layout.PACKS_PREFIX):
                total += blob.size or 0
        except AzureError:
            return None
        return total


@lru_cache(maxsize=4096)
def _container(package: str) -> str:
    try:
        return layout.container_name(package)
    except CdpError:
        raise NotFound(f"package {package!r} is not on this distribution point") from None


def _valid_version(version: str) -> bool:
    try:
        layout.check_version(version)
    except CdpError:
        return False
    return True


def describe(exc: AzureError) -> str:
    """One line about a storage failure, without URL, SAS or body."""
    status = getattr(exc, "status_code", None)
    if status:
        code = getattr(exc, "error_code", None) or getattr(exc, "reason", None) or ""
        return f"HTTP {status} {code}".strip()
    return type(exc).__name__
