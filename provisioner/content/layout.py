"""Where a package lives in a distribution point's storage account. Pure: no Azure, no keys.

One container per package, named from a hash of the package id so that storage does not show
the id itself; the front end computes the same name to scope a client's read-only SAS::

    pkg-<first 32 hex of sha256(package id)>/
        chunks/<chunk id>      an encrypted chunk; the id is HMAC-SHA256(id key, plaintext) in hex
        manifests/<version>    the encrypted manifest of one version
        current                {"format": 1, "version": "..."} in plaintext, written last

The front end holds no key: it can read ``current`` and the names of versions, nothing else.
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

CHUNKS_PREFIX = "chunks/"
MANIFESTS_PREFIX = "manifests/"
CURRENT_BLOB = "current"
POINTER_FORMAT = 1


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


def chunk_blob(chunk_id: str) -> str:
    if not _CHUNK_ID.fullmatch(chunk_id):
        raise ValueError(f"not a chunk id: {chunk_id!r}")
    return CHUNKS_PREFIX + chunk_id


def chunk_id_of(blob_name: str) -> str | None:
    """The chunk id in a blob name under ``chunks/``, or None for anything else."""
    name = blob_name.removeprefix(CHUNKS_PREFIX)
    return name if blob_name.startswith(CHUNKS_PREFIX) and _CHUNK_ID.fullmatch(name) else None


def manifest_blob(version: str) -> str:
    return MANIFESTS_PREFIX + check_version(version)


def version_of(blob_name: str) -> str | None:
    """The version in a blob name under ``manifests/``, or None for anything else."""
    name = blob_name.removeprefix(MANIFESTS_PREFIX)
    return name if blob_name.startswith(MANIFESTS_PREFIX) and _VERSION.fullmatch(name) else None


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
