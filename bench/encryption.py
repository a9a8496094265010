"""Benchmark: cdp's chunk encryption (AES-256-GCM, chunk id as associated data) against
azure-storage-blob's client-side encryption v2 (encryption_version "2.0", a key-encryption-key
object wrapping a fresh content key per blob with AES key wrap), on the same data.

Usage: .venv/bin/python bench/encryption.py [--size-mib 256] [--chunk-kib 1024] [--no-azurite]

1. In memory: MB/s to encrypt and to decrypt the data cut into chunks. For CSE v2 this calls
   ``azure.storage.blob._encryption.encrypt_blob`` / ``decrypt_blob``, the functions
   ``upload_blob``/``download_blob`` run for a blob that fits one request (private API:
   the only way to time the SDK's encryption without the network).
2. Against a local Azurite (started on a temporary site, stopped at the end): upload the same
   chunks with 8 threads, as plaintext, as cdp blobs, and with CSE v2 (the SDK encrypts inside
   ``upload_blob``), then download and decrypt them all again.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azure.storage.blob._encryption import _GCMRegionNonceValidator, decrypt_blob, encrypt_blob
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from provisioner.content import crypto

MiB = 1024 * 1024


class KeyWrapper:
    """A key-encryption-key for azure-storage-blob CSE: AES key wrap (RFC 3394) with a local key."""

    def __init__(self, key: bytes):
        self.key = key

    def wrap_key(self, key: bytes) -> bytes:
        return aes_key_wrap(self.key, key)

    def unwrap_key(self, key: bytes, algorithm: str) -> bytes:
        assert algorithm == "A256KW"
        return aes_key_unwrap(self.key, key)

    def get_key_wrap_algorithm(self) -> str:
        return "A256KW"

    def get_kid(self) -> str:
        return "local:bench"


def best_times(repeat: int, ops: dict) -> dict:
    """The best time of each op over ``repeat`` rounds, the ops interleaved in every round
    (so a load spike from another process on the machine does not favour one of them)."""
    best = dict.fromkeys(ops, float("inf"))
    for _ in range(repeat):
        for name, fn in ops.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def in_memory(chunks: list[bytes], repeat: int) -> None:
    total = sum(map(len, chunks))
    content_key, id_key = os.urandom(32), os.urandom(32)
    kek = KeyWrapper(os.urandom(32))
    ids = [crypto.chunk_id(id_key, c) for c in chunks]
    cdp_blobs = [crypto.encrypt_chunk(content_key, i, c) for i, c in zip(ids, chunks, strict=True)]
    cse_blobs = [encrypt_blob(c, kek, "2.0") for c in chunks]

    def cdp_encrypt():
        return [crypto.encrypt_chunk(content_key, i, c) for i, c in zip(ids, chunks, strict=True)]

    def cdp_decrypt():
        return [crypto.decrypt_chunk(content_key, i, b) for i, b in zip(ids, cdp_blobs, strict=True)]

    def cse_encrypt():
        return [encrypt_blob(c, kek, "2.0") for c in chunks]

    def cse_decrypt():  # for v2, the offsets are the range [0, size) of the plaintext wanted
        return [
            decrypt_blob(False, kek, None, blob, 0, len(chunk), {"x-ms-meta-encryptiondata": metadata},
                         nonce_validator=_GCMRegionNonceValidator())
            for chunk, (metadata, blob) in zip(chunks, cse_blobs, strict=True)
        ]

    def chunk_ids():
        return [crypto.chunk_id(id_key, c) for c in chunks]

    assert cdp_decrypt() == chunks and cse_decrypt() == chunks
    best = best_times(repeat, {
        ("cdp AES-256-GCM", "encrypt"): cdp_encrypt,
        ("CSE v2 (azure-storage-blob)", "encrypt"): cse_encrypt,
        ("cdp AES-256-GCM", "decrypt"): cdp_decrypt,
        ("CSE v2 (azure-storage-blob)", "decrypt"): cse_decrypt,
        ("HMAC-SHA256 chunk id (cdp)", "hash"): chunk_ids,
    })
    print(f"in memory: {len(chunks)} chunks, {total / MiB:.0f} MiB, best of {repeat} interleaved rounds")
    for (name, op), seconds in best.items():
        print(f"  {name:30} {op:8} {total / seconds / 1e6:8.0f} MB/s")
    print(f"  stored overhead per chunk: cdp {crypto.OVERHEAD} B;"
          f" CSE v2 {len(cse_blobs[0][1]) - len(chunks[0])} B + metadata {len(cse_blobs[0][0])} B")


def against_azurite(chunks: list[bytes], workers: int, repeat: int) -> None:
    from provisioner.localcloud import LocalCloud
    from provisioner.site import Site

    total = sum(map(len, chunks))
    content_key, id_key = os.urandom(32), os.urandom(32)
    kek = KeyWrapper(os.urandom(32))
    with tempfile.TemporaryDirectory(prefix="cdp-bench-") as home:
        cloud = LocalCloud(Site.open(Path(home)))
        cloud.start()
        try:
            service = cloud.blob_service_client(max_single_put_size=64 * MiB)
            plain = service.get_container_client("plain")
            cdp = service.get_container_client("cdp")
            cse = service.get_container_client("csev2")
            cse.require_encryption, cse.key_encryption_key, cse.encryption_version = True, kek, "2.0"
            for container in (plain, cdp, cse):
                container.create_container()

            ids = [crypto.chunk_id(id_key, c) for c in chunks]  # needed for dedup either way: not timed

            def put_plain(n: int) -> None:
                plain.upload_blob(f"c/{n}", chunks[n], overwrite=True)

            def put_cdp(n: int) -> None:
                cdp.upload_blob(f"c/{n}", crypto.encrypt_chunk(content_key, ids[n], chunks[n]), overwrite=True)

            def put_cse(n: int) -> None:
                cse.upload_blob(f"c/{n}", chunks[n], overwrite=True)

            def get_plain(n: int) -> None:
                assert plain.download_blob(f"c/{n}").readall() == chunks[n]

            def get_cdp(n: int) -> None:
                assert crypto.decrypt_chunk(content_key, ids[n], cdp.download_blob(f"c/{n}").readall()) == chunks[n]

            def get_cse(n: int) -> None:
                assert cse.download_blob(f"c/{n}").readall() == chunks[n]

            modes = {
                "plaintext (no encryption)": (put_plain, get_plain),
                "cdp AES-256-GCM": (put_cdp, get_cdp),
                "CSE v2 (azure-storage-blob)": (put_cse, get_cse),
            }
            with ThreadPoolExecutor(workers) as pool:
                def each(fn):
                    return lambda: list(pool.map(fn, range(len(chunks))))

                uploads = {(name, "upload"): each(put) for name, (put, _) in modes.items()}
                downloads = {(name, "download"): each(get) for name, (_, get) in modes.items()}
                best = best_times(repeat, uploads | downloads)
            print(f"Azurite (HTTPS, {workers} threads): {len(chunks)} blobs, {total / MiB:.0f} MiB,"
                  f" best of {repeat} interleaved rounds")
            for name in modes:
                up, down = best[name, "upload"], best[name, "download"]
                print(f"  {name:30} upload {total / up / 1e6:7.0f} MB/s"
                      f"   download+decrypt {total / down / 1e6:7.0f} MB/s")
        finally:
            cloud.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--chunk-kib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--no-azurite", action="store_true", help="in-memory figures only")
    args = parser.parse_args()

    rng = random.Random(5)
    size, piece = args.size_mib * MiB, args.chunk_kib * 1024
    chunks = [rng.randbytes(min(piece, size - at)) for at in range(0, size, piece)]
    in_memory(chunks, args.repeat)
    if not args.no_azurite:
        against_azurite(chunks, args.workers, max(1, args.repeat - 1))


if __name__ == "__main__":
    main()
