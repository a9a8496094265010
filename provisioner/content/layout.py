"""Where a package lives in a distribution point's storage account. Pure: no Azure, no keys.

One container per package, named from a hash of the package id so that storage does not show
the id itself; the front end computes the same name to scope a client's read-only SAS::

    pkg-<first 32 hex of sha256(package id)>/
        packs/<pack id>        encrypted chunks back to back; metadata "chunks": "<id>:<stored size>,..."
        manifests/<version>    the encrypted manifest of one version, with where each chunk is
        chunklists/<version>   the version's chunks, "<id>:<stored size>" a line each, in plaintext
        current                {"format": 1, "version": "..."} in plaintext, written last

A chunk id is HMAC-SHA256(id key, plaintext) in hex. Chunks are stored in packs (up to about
8 MiB each, the chunks one upload added) rather than one blob each, because storage charges
every request: a client reads a version with a few ranged GETs instead of one GET per chunk.
A pack's metadata lists its chunks in order (so an upload learns what storage has from one
listing); a manifest says, for its distribution point, in which pack and at which offset each
of its chunks is.

The front end holds no key: it can read ``current``, the names of versions and their chunk
lists (ids storage already shows in the packs' metadata), nothing else. A chunk list lets it
count what a client that holds an older version downloads for a newer one.
"""

from __future__ import annotations

import hashlib
import json
import re

from provisioner.errors import CdpError, UsageError

PACKAGE_ID_RULE = "1-64 characters: letters, digits, '.', '_', '-', starting with a letter or digit"
VERSION_RULE = "1-64 characters: letters, digits, '.', '_', '+', '-', starting with a letter or digit"
_PACKAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_CHUNK_ID = re.compile(r"[0-9a-f]{64}")
_PACK_ID = re.compile(r"[0-9a-f]{32}")

PACKS_PREFIX = "packs/"
PACK_METADATA = "chunks"
MANIFESTS_PREFIX = "manifests/"
CHUNK_LISTS_PREFIX = "chunklists/"
CURRENT_BLOB = "current"
POINTER_FORMAT = 1
# A front end answers from what it read of a package (its ``current`` pointer, whether a
# manifest exists) at most this many seconds after it began reading it; whoever writes or
# deletes them waits this long before saying the change is done, so every client asking
# afterwards gets it.
VISIBLE_AFTER = 0.25


def check_package_id(package_id: str) -> str:
    if not isinstance(package_id, str) or not _PACKAGE_ID.fullmatch(package_id):
        raise UsageError(f"bad package id {package_id!r}: {PACKAGE_ID_RULE}")
    return package_id


def check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise UsageError(f"bad version {version!r}: {VERSION_RULE}")
    return version


def container_name(package_id: str) -> str:
    """The container holding one package in every distribution point."""
    check_package_id(package_id)
    return "pkg-" + hashlib.sha256(package_id.encode()).hexdigest()[:32]


def is_chunk_id(chunk_id) -> bool:
    return isinstance(chunk_id, str) and bool(_CHUNK_ID.fullmatch(chunk_id))


def is_pack_id(pack_id) -> bool:
    return isinstance(pack_id, str) and bool(_PACK_ID.fullmatch(pack_id))


def pack_blob(pack_id: str) -> str:
    if not is_pack_id(pack_id):
        raise ValueError(f"not a pack id: {pack_id!r}")
    return PACKS_PREFIX + pack_id


def pack_id_of(blob_name: str) -> str | None:
    """The pack id in a blob name under ``packs/``, or None for anything else."""
    name = blob_name.removeprefix(PACKS_PREFIX)
    return name if blob_name.startswith(PACKS_PREFIX) and is_pack_id(name) else None


def pack_metadata(chunks: list[tuple[str, int]]) -> dict[str, str]:
    """The metadata of a pack holding ``(chunk id, stored size)`` back to back, in order."""
    return {PACK_METADATA: ",".join(f"{chunk_id}:{size}" for chunk_id, size in chunks)}


def parse_pack_metadata(metadata: dict[str, str] | None) -> list[tuple[str, int, int]] | None:
    """``(chunk id, offset, stored size)`` of each chunk in a pack, from its metadata; None if
    the metadata is missing or not ours (such a pack is ignored: its chunks count as absent)."""
    raw = {k.lower(): v for k, v in (metadata or {}).items()}.get(PACK_METADATA)
    if not raw:
        return None
    chunks, offset = [], 0
    for item in raw.split(","):
        chunk_id, _, size = item.partition(":")
        if not (is_chunk_id(chunk_id) and size.isdigit()):
            return None
        chunks.append((chunk_id, offset, int(size)))
        offset += int(size)
    return chunks


def manifest_blob(version: str) -> str:
    return MANIFESTS_PREFIX + check_version(version)


def version_of(blob_name: str) -> str | None:
    """The version in a blob name under ``manifests/``, or None for anything else."""
    name = blob_name.removeprefix(MANIFESTS_PREFIX)
    return name if blob_name.startswith(MANIFESTS_PREFIX) and _VERSION.fullmatch(name) else None


def chunk_list_blob(version: str) -> str:
    return CHUNK_LISTS_PREFIX + check_version(version)


def chunk_list(chunks: dict[str, int]) -> bytes:
    """The body of a version's chunk list: each distinct chunk id and its stored size."""
    return "".join(f"{chunk_id}:{size}\n" for chunk_id, size in chunks.items()).encode()


def parse_chunk_list(body: bytes) -> dict[str, int] | None:
    """The chunks of a chunk list, or None if it is not one we wrote."""
    chunks = {}
    for line in body.decode("ascii", "replace").splitlines():
        chunk_id, _, size = line.partition(":")
        if not (is_chunk_id(chunk_id) and size.isdigit()):
            return None
        chunks[chunk_id] = int(size)
    return chunks


def current_pointer(version: str) -> bytes:
    """The body of the ``current`` blob."""
    return json.dumps({"format": POINTER_FORMAT, "version": check_version(version)}).encode()


def parse_current(body: bytes) -> str:
    """The version named by a ``current`` blob (CdpError if it is not one we wrote)."""
    try:
        data = json.loads(body)
        version = data["version"]
        ok = data.get("format") == POINTER_FORMAT and bool(_VERSION.fullmatch(version))
    except (ValueError, TypeError, KeyError, AttributeError):
        ok = False
    if not ok:
        raise CdpError("the 'current' pointer in storage is damaged")
    return version
