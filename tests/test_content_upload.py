"""The content core against a real Azurite (the session's ``local_cloud``).

The stored bytes are read back raw and decrypted here independently, with ``cryptography``
primitives, the site's state database and its master key file only: not with cdp's modules.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import socket
import uuid

import pytest

from provisioner.content import chunking, crypto
from provisioner.content import keys as keys_mod
from provisioner.content import layout
from provisioner.content.layout import container_name
from provisioner.content.manifest import unseal
from provisioner.content.store import ChunkIndex, PackageStore, StorageError, client_options
from provisioner.content.upload import PackageVersion, Target, distribute, upload
from provisioner.errors import CdpError
from provisioner.site import Site

from independent import restore, snapshot
from packs import corrupt_chunk, drop_pack_of, stored_chunks
from trees import MARKER, mixed_tree

MiB = 1024 * 1024


def random_bytes(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(rng.randbytes(min(MiB, n - i)) for i in range(0, n, MiB))


@pytest.fixture
def site(tmp_path) -> Site:
    return Site.open(tmp_path / "site")


@pytest.fixture
def service(local_cloud):
    return local_cloud.blob_service_client(**client_options())


def new_store(service, package: str, suffix: str = "") -> PackageStore:
    return PackageStore(service.get_container_client(container_name(package) + suffix))


def new_package() -> str:
    return "test-" + uuid.uuid4().hex[:12]


# -- the independent reader ------------------------------------------------------------------


# -- trees -----------------------------------------------------------------------------------


def test_a_mixed_tree_is_stored_encrypted_and_decrypts_independently(site, service, tmp_path):
    package = new_package()
    source = tmp_path / "source"
    mixed_tree(source)
    keys = keys_mod.get_or_create(site.state, site.master_key(), package)
    store = new_store(service, package)
    index = ChunkIndex(site.state, store.location)
    seen = []

    release = PackageVersion(package, "1.0", "application", keys)
    result = upload(source, release, store, index=index, progress=seen.append)

    total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    assert result.status == "uploaded" and result.error is None
    assert result.bytes_total == result.bytes_uploaded == sum(seen) == total
    assert result.chunks_uploaded == result.chunks_total == len(seen)

    container = store.container
    blobs = {b.name: container.download_blob(b.name).readall() for b in container.list_blobs()}
    packs = {n for n in blobs if re.fullmatch(r"packs/[0-9a-f]{32}", n)}
    assert set(blobs) == {"current", "manifests/1.0", "chunklists/1.0"} | packs
    where = stored_chunks(container)
    assert len(where) == result.chunks_total  # the tree has no repeated chunk
    listed = layout.parse_chunk_list(blobs["chunklists/1.0"])  # for the front end's egress count
    assert listed == {chunk_id: size for chunk_id, (_, _, size) in where.items()}
    assert {pack for pack, _, _ in where.values()} == packs
    assert all(sum(size for p, _, size in where.values() if p == pack) == len(blobs[pack]) for pack in packs)
    for name, data in blobs.items():
        assert MARKER not in data, name
        for file_name in ("naïve".encode(), "Ärger".encode(), b"setup program", b"file 0001"):
            assert file_name not in data and file_name not in name.encode()
    assert json.loads(blobs["current"]) == {"format": 1, "version": "1.0"}

    restored = tmp_path / "restored"
    restored.mkdir()
    doc = restore(container, site.home, package, restored)
    assert snapshot(restored) == snapshot(source)
    assert doc["package"] == package and doc["version"] == "1.0" and doc["type"] == "application"
    assert index.sizes() == {chunk_id: size for chunk_id, (_, _, size) in where.items()}
    assert ChunkIndex.stored_bytes_under(site.state, service.url) == index.stored_bytes() == sum(index.sizes().values())

    again = upload(source, release, store, index=index)
    assert again.bytes_uploaded == 0 and again.chunks_uploaded == 0
    assert again.chunks_total == result.chunks_total and store.current() == "1.0"


def test_a_new_version_uploads_only_the_changed_chunks(site, service, tmp_path):
    package = new_package()
    keys = keys_mod.get_or_create(site.state, site.master_key(), package)
    store = new_store(service, package)
    v1 = random_bytes(32 * MiB, 11)
    middle = 16 * MiB
    v2 = v1[:middle] + random_bytes(MiB, 12) + v1[middle + MiB :]
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v1/image.wim").write_bytes(v1)
    (tmp_path / "v2/image.wim").write_bytes(v2)

    first = upload(tmp_path / "v1/image.wim", PackageVersion(package, "1", "os-upgrade", keys), store)
    second = upload(tmp_path / "v2/image.wim", PackageVersion(package, "2", "os-upgrade", keys), store)

    assert first.bytes_uploaded == 32 * MiB
    assert 0 < second.bytes_uploaded <= 4 * MiB, second
    assert second.chunks_uploaded < 5
    assert store.versions() == ["1", "2"] and store.current() == "2"


def test_an_interrupted_upload_keeps_the_previous_version_and_resumes(site, service, tmp_path):
    package = new_package()
    keys = keys_mod.get_or_create(site.state, site.master_key(), package)
    store = new_store(service, package)
    index = ChunkIndex(site.state, store.location)
    (tmp_path / "v1").write_bytes(b"version one")
    (tmp_path / "v2").write_bytes(random_bytes(64 * MiB, 21))
    upload(tmp_path / "v1", PackageVersion(package, "1", "package", keys), store)

    class Interrupted(Exception):
        pass

    settled = []

    def stop_after_three(nbytes: int) -> None:
        settled.append(nbytes)
        if len(settled) == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        upload(tmp_path / "v2", PackageVersion(package, "2", "package", keys), store, index=index,
               progress=stop_after_three)

    assert store.current() == "1" and store.versions() == ["1"]
    stored = store.chunk_sizes()
    assert index.sizes() == stored  # the index recorded what made it before the interruption
    assert len(stored) > 3

    rerun = upload(tmp_path / "v2", PackageVersion(package, "2", "package", keys), store, index=index)
    assert store.current() == "2"
    v2_ids = {c["id"] for c in restore(store.container, site.home, package, tmp_path / "check")["chunks"]}
    already = len(v2_ids & set(stored))
    assert already >= 3
    assert rerun.chunks_uploaded == rerun.chunks_total - already > 0
    assert index.sizes() == store.chunk_sizes()


def dead_store(package: str) -> PackageStore:
    """A container on a port nobody listens on (no retries: fail fast)."""
    from azure.storage.blob import ContainerClient

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ContainerClient(f"https://127.0.0.1:{port}/devstoreaccount1", container_name(package),
                             credential=None, retry_total=0, connection_timeout=2)
    return PackageStore(client)


class LeasedSecondPack(PackageStore):
    """Real storage that refuses the second pack stored in it: just before it is written, a blob
    under a lease takes its name, so storage answers 412 (a lease is held and none was given)."""

    packs = itertools.count(1)

    def put_pack(self, pack_id: str, blob: bytes, chunks: list) -> None:
        if next(self.packs) == 2:
            self.container.upload_blob(layout.pack_blob(pack_id), b"damaged").acquire_lease(lease_duration=-1)
        super().put_pack(pack_id, blob, chunks)


def test_one_failing_distribution_point_does_not_stop_the_others(site, service, tmp_path):
    package = new_package()
    keys = keys_mod.get_or_create(site.state, site.master_key(), package)
    (tmp_path / "v1").write_bytes(b"one")
    (tmp_path / "v2").write_bytes(random_bytes(8 * MiB, 31))
    good, breaks, down = new_store(service, package), new_store(service, package, "-b"), dead_store(package)
    upload(tmp_path / "v1", PackageVersion(package, "1", "application", keys), breaks)
    # Storage refuses one chunk in the middle of the stream: a damaged blob under a lease.
    with (tmp_path / "v2").open("rb") as fh:
        ids = [crypto.chunk_id(keys.id_key, piece.data) for piece in chunking.cut(fh)]
    assert len(ids) > 4  # more than one pack of chunks
    breaks = LeasedSecondPack(breaks.container)
    targets = [Target("good", good), Target("down", down), Target("breaks", breaks)]

    outcome = distribute(tmp_path / "v2", PackageVersion(package, "2", "application", keys), targets)

    by_name = {r.distribution_point: r for r in outcome.results}
    assert not outcome.ok and outcome.manifest is not None
    assert by_name["down"].status == "failed" and "cannot create container" in by_name["down"].error
    assert by_name["breaks"].status == "failed" and "HTTP 412" in by_name["breaks"].error
    assert all("\n" not in r.error for r in (by_name["down"], by_name["breaks"]))
    assert by_name["good"].status == "uploaded" and by_name["good"].bytes_uploaded == 8 * MiB
    assert by_name["good"].chunks_total == len(ids)
    assert good.current() == "2" and good.versions() == ["2"]
    assert breaks.current() == "1" and breaks.versions() == ["1"]
    with pytest.raises(StorageError):
        down.current()


def test_validate_repair_and_garbage_collection(site, service, tmp_path):
    package = new_package()
    keys = keys_mod.get_or_create(site.state, site.master_key(), package)
    store = new_store(service, package)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v1/a.bin").write_bytes(random_bytes(3 * MiB, 41))
    (tmp_path / "v2/a.bin").write_bytes(random_bytes(12 * MiB, 42))
    upload(tmp_path / "v1", PackageVersion(package, "1", "package", keys), store)
    outcome = distribute(tmp_path / "v2", PackageVersion(package, "2", "package", keys), [Target("dp", store)])
    chunks = outcome.manifest["chunks"]

    def manifest() -> dict:
        return unseal(store.get_manifest("2"), keys, "2")

    assert store.damaged_chunks(keys, manifest()) == {}
    where = stored_chunks(store.container)
    assert len({where[c["id"]][0] for c in chunks}) >= 2  # the version's chunks are in several packs

    corrupt = chunks[0]["id"]
    corrupt_chunk(store.container, corrupt)
    missing = drop_pack_of(store.container, chunks[-1]["id"])
    assert corrupt not in missing
    assert store.damaged_chunks(keys, manifest()) == {corrupt: "corrupt"} | dict.fromkeys(missing, "missing")

    repaired = distribute(tmp_path / "v2", PackageVersion(package, "2", "package", keys), [Target("dp", store)],
                          repair={corrupt}, make_current=False)
    assert repaired.results[0].chunks_uploaded == len(missing) + 1
    assert store.damaged_chunks(keys, manifest()) == {}
    assert store.current() == "2"

    v1_only = set(store.chunk_sizes()) - {c["id"] for c in chunks}
    store.delete_manifest("1")
    gc = store.collect_garbage(keys)
    assert gc.packs_deleted == 2  # v1's, and the one with the corrupt copy (its other chunks moved)
    assert set(gc.deleted) == v1_only and gc.chunks_kept == len({c["id"] for c in chunks})
    assert set(store.chunk_sizes()) == {c["id"] for c in chunks}
    assert store.versions() == ["2"] and store.current() == "2"
    assert store.damaged_chunks(keys, manifest()) == {}

    store.put_manifest("3", b"CDPE\x01" + bytes(40))
    with pytest.raises(CdpError, match="manifest of .* 3 is damaged"):
        store.collect_garbage(keys)
    assert set(store.chunk_sizes()) == {c["id"] for c in chunks}
