"""Content encryption: AES-256-GCM per chunk and per manifest, chunk ids as keyed hashes.

A stored blob is ``header || nonce || ciphertext || tag``:

    header      5 bytes: b"CDPE" and the format byte 0x01
    nonce       12 random bytes
    ciphertext  as long as the plaintext
    tag         16 bytes (GCM)

The associated data binds the blob to what it claims to be, so storage cannot swap blobs:
``header || b"chunk\\0" || chunk id (ASCII hex)`` for a chunk and
``header || b"manifest\\0" || package id || b"\\0" || version`` for a manifest.

A chunk id is HMAC-SHA256(id key, plaintext) in hex: equal chunks get equal ids (dedup) but
nobody without the package's id key can confirm a guess of the content.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from provisioner.errors import CdpError

MAGIC = b"CDPE"
FORMAT = 1
HEADER = MAGIC + bytes([FORMAT])
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = len(HEADER) + NONCE_BYTES + TAG_BYTES
KEY_BYTES = 32


class CorruptContent(CdpError):
    """A stored blob does not decrypt, or decrypts to something else than its name says."""


def chunk_id(id_key: bytes, plaintext) -> str:
    """The keyed id of a chunk: HMAC-SHA256 of its plaintext in lowercase hex."""
    return hmac.digest(id_key, plaintext, hashlib.sha256).hex()


def encrypted_size(plaintext_size: int) -> int:
    """The size of the stored blob for a plaintext of ``plaintext_size`` bytes."""
    return plaintext_size + OVERHEAD


def chunk_aad(chunk_id_hex: str) -> bytes:
    return HEADER + b"chunk\0" + chunk_id_hex.encode("ascii")


def manifest_aad(package_id: str, version: str) -> bytes:
    return HEADER + b"manifest\0" + package_id.encode() + b"\0" + version.encode()


def seal(key: bytes, plaintext, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` (bytes-like) with a fresh random nonce; returns the stored form."""
    nonce = os.urandom(NONCE_BYTES)
    return b"".join((HEADER, nonce, AESGCM(key).encrypt(nonce, plaintext, aad)))


def open_sealed(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    """Decrypt a blob made by :func:`seal`; CorruptContent names ``what`` if it fails."""
    if len(blob) < OVERHEAD or blob[: len(HEADER)] != HEADER:
        raise CorruptContent(f"{what} is damaged: not a cdp encrypted blob")
    nonce = blob[len(HEADER) : len(HEADER) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(HEADER) + NONCE_BYTES :], aad)
    except InvalidTag:
        raise CorruptContent(f"{what} is damaged: it does not decrypt with the package key") from None


def encrypt_chunk(content_key: bytes, chunk_id_hex: str, plaintext) -> bytes:
    return seal(content_key, plaintext, chunk_aad(chunk_id_hex))


def decrypt_chunk(content_key: bytes, chunk_id_hex: str, blob: bytes, id_key: bytes | None = None) -> bytes:
    """Decrypt a chunk; with ``id_key`` also check that the plaintext matches its id."""
    plaintext = open_sealed(content_key, blob, chunk_aad(chunk_id_hex), f"chunk {chunk_id_hex}")
    if id_key is not None and not hmac.compare_digest(chunk_id(id_key, plaintext), chunk_id_hex):
        raise CorruptContent(f"chunk {chunk_id_hex} is damaged: its content does not match its id")
    return plaintext


def encrypt_manifest(content_key: bytes, package_id: str, version: str, body: bytes) -> bytes:
    return seal(content_key, body, manifest_aad(package_id, version))


def decrypt_manifest(content_key: bytes, package_id: str, version: str, blob: bytes) -> bytes:
    what = f"the manifest of {package_id} {version}"
    return open_sealed(content_key, blob, manifest_aad(package_id, version), what)
