"""An independent reader of what cdp stores: it rebuilds a package version from the raw blobs
with `cryptography` primitives, the master key file and the state database, and no cdp code.
If cdp's format and this reader ever disagree, the tests that use it fail."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import stat
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

HEADER = b"CDPE\x01"


def package_keys(home: Path, package: str) -> tuple[bytes, bytes]:
    """(content key, id key) of ``package``, unwrapped with the site's master key file."""
    master = (Path(home) / "keys" / "master.key").read_bytes()
    with sqlite3.connect(Path(home) / "state.db") as db:
        wrapped = db.execute(
            "SELECT content_key_wrapped, id_key_wrapped FROM package_keys WHERE package_id = ?", (package,)
        ).fetchone()
    assert wrapped is not None, f"no keys for {package}"
    return aes_key_unwrap(master, wrapped[0]), aes_key_unwrap(master, wrapped[1])


def open_blob(key: bytes, blob: bytes, context: bytes) -> bytes:
    header, nonce, sealed = blob[:5], blob[5:17], blob[17:]
    assert header == HEADER
    return AESGCM(key).decrypt(nonce, sealed, header + context)


def restore(container, home: Path, package: str, dest: Path) -> dict:
    """Rebuild the current version of ``package`` from ``container``'s raw blobs into ``dest``;
    returns its manifest."""
    content_key, id_key = package_keys(home, package)
    version = json.loads(container.download_blob("current").readall())["version"]
    sealed = container.download_blob(f"manifests/{version}").readall()
    doc = json.loads(open_blob(content_key, sealed, b"manifest\0" + package.encode() + b"\0" + version.encode()))
    where = {chunk_id: (pack, offset) for pack, chunks in doc["packs"].items() for chunk_id, offset in chunks}
    packs = {pack: container.download_blob(f"packs/{pack}").readall() for pack in doc["packs"]}
    stream = bytearray()
    for chunk in doc["chunks"]:
        pack, offset = where[chunk["id"]]
        stored = packs[pack][offset: offset + len(HEADER) + 12 + chunk["size"] + 16]
        data = open_blob(content_key, stored, b"chunk\0" + chunk["id"].encode())
        assert hmac.new(id_key, data, hashlib.sha256).hexdigest() == chunk["id"]
        assert len(data) == chunk["size"]
        stream += data
    assert len(stream) == doc["size"]
    for entry in doc["files"]:
        data = bytes(stream[entry["offset"]: entry["offset"] + entry["size"]])
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        path = dest / entry["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(entry["mode"])
    for folder in doc["dirs"]:
        (dest / folder["path"]).mkdir(parents=True)
    return doc


def snapshot(root: Path) -> dict:
    """Every file and folder under ``root``: path -> (mode, bytes), or (None, None) for a folder."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        found[rel] = (None, None) if path.is_dir() else (stat.S_IMODE(path.stat().st_mode), path.read_bytes())
    return found
