"""Pure unit tests of the content core: layout, keys, crypto, chunking. No storage."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import random
import sqlite3

import pytest

from provisioner.content import chunking, crypto, layout, manifest
from provisioner.content import keys as keys_mod
from provisioner.errors import CdpError, UsageError
from provisioner.site.state import State

MiB = 1024 * 1024


def random_bytes(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(rng.randbytes(min(MiB, n - i)) for i in range(0, n, MiB))


# layout


def test_container_name_is_a_pure_hash_of_the_package_id():
    name = layout.container_name("Office 365".replace(" ", "-"))
    assert name == "pkg-" + hashlib.sha256(b"Office-365").hexdigest()[:32]
    assert len(name) == 36 and name.islower()
    assert layout.container_name("a") != layout.container_name("A")


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a/b", "x" * 65, "é", ".hidden"])
def test_bad_package_ids_name_the_rule(bad):
    with pytest.raises(UsageError, match="bad package id.*letters, digits"):
        layout.check_package_id(bad)


@pytest.mark.parametrize("good", ["1.0", "2024.10+build.7", "v1_beta-2", "x" * 64])
def test_good_versions(good):
    assert layout.check_version(good) == good
    assert layout.version_of(layout.manifest_blob(good)) == good


@pytest.mark.parametrize("bad", ["", "+1", "1 0", "1/0", "x" * 65, None])
def test_bad_versions_name_the_rule(bad):
    with pytest.raises(UsageError, match="bad version"):
        layout.check_version(bad)


def test_current_pointer_round_trip_and_damage():
    body = layout.current_pointer("1.2")
    assert json.loads(body) == {"format": 1, "version": "1.2"}
    assert layout.parse_current(body) == "1.2"
    for damaged in (b"", b"{}", b'{"format": 2, "version": "1"}', b'{"format": 1, "version": "../x"}', b"[1]"):
        with pytest.raises(CdpError, match="damaged"):
            layout.parse_current(damaged)


def test_pack_blob_names_and_metadata():
    pack_id = "cd" * 16
    assert layout.pack_id_of(layout.pack_blob(pack_id)) == pack_id
    assert layout.pack_id_of("packs/nothex") is None
    assert layout.pack_id_of("manifests/" + pack_id) is None
    with pytest.raises(ValueError):
        layout.pack_blob("../current")
    chunks = [("ab" * 32, 100), ("ef" * 32, 7)]
    metadata = layout.pack_metadata(chunks)
    assert layout.parse_pack_metadata(metadata) == [("ab" * 32, 0, 100), ("ef" * 32, 100, 7)]
    assert layout.parse_pack_metadata({"Chunks": metadata["chunks"]}) == layout.parse_pack_metadata(metadata)
    for foreign in (None, {}, {"chunks": ""}, {"chunks": "xyz:1"}, {"chunks": "ab" * 32 + ":-1"}):
        assert layout.parse_pack_metadata(foreign) is None


def test_manifest_locations_per_distribution_point():
    document = {"package": "p", "version": "1", "chunks": [{"id": "ab" * 32, "size": 10},
                {"id": "ef" * 32, "size": 5}, {"id": "ab" * 32, "size": 10}]}
    located = manifest.locate(document, {"ab" * 32: ("1" * 32, 0, 10 + crypto.OVERHEAD),
                                         "ef" * 32: ("2" * 32, 64, 5 + crypto.OVERHEAD)})
    assert located["packs"] == {"1" * 32: [["ab" * 32, 0]], "2" * 32: [["ef" * 32, 64]]}
    assert manifest.content(located) == document
    assert manifest.locations(located) == {"ab" * 32: ("1" * 32, 0, 10 + crypto.OVERHEAD),
                                           "ef" * 32: ("2" * 32, 64, 5 + crypto.OVERHEAD)}
    for broken in ({}, {"1" * 32: [["ab" * 32, 0]]}, {"x": [["ab" * 32, 0]], "2" * 32: [["ef" * 32, 64]]},
                   {"1" * 32: [["ab" * 32, -1]], "2" * 32: [["ef" * 32, 64]]}):
        with pytest.raises(CdpError, match="does not say where"):
            manifest.locations({**document, "packs": broken})


# keys


@pytest.fixture
def state(tmp_path):
    db = State.open(tmp_path / "state.db")
    yield db
    db.close()


def test_package_keys_are_created_once_and_stored_wrapped(state, tmp_path):
    master = bytes(range(32))
    first = keys_mod.get_or_create(state, master, "app")
    again = keys_mod.get_or_create(state, master, "app")
    other = keys_mod.get_or_create(state, master, "other")
    assert first == again
    assert len(first.content_key) == len(first.id_key) == 32 and first.content_key != first.id_key
    assert other.content_key != first.content_key and other.id_key != first.id_key
    raw = b"".join(
        bytes(row[0]) + bytes(row[1])
        for row in sqlite3.connect(tmp_path / "state.db").execute(
            "SELECT content_key_wrapped, id_key_wrapped FROM package_keys"
        )
    )
    assert first.content_key not in raw and first.id_key not in raw
    assert repr(first.content_key) not in repr(first) and repr(first.id_key) not in repr(first)


def test_package_keys_with_another_master_key_fail_clearly(state):
    keys_mod.get_or_create(state, b"\x01" * 32, "app")
    with pytest.raises(CdpError, match="do not unwrap with the site master key"):
        keys_mod.load(state, b"\x02" * 32, "app")
    assert keys_mod.load(state, b"\x01" * 32, "never") is None
    with pytest.raises(CdpError, match="no keys for package never"):
        keys_mod.require(state, b"\x01" * 32, "never")


def test_exported_keys_round_trip(state):
    keys = keys_mod.get_or_create(state, b"\x01" * 32, "app")
    exported = keys.export()
    assert json.loads(json.dumps(exported)) == exported
    assert keys_mod.PackageKeys.from_export(exported) == keys
    with pytest.raises(CdpError, match="malformed"):
        keys_mod.PackageKeys.from_export({"package": "app", "content_key": "!!", "id_key": ""})


# crypto

CONTENT_KEY = bytes(range(32))
ID_KEY = bytes(range(32, 64))


def test_chunk_ids_are_keyed_hmac_sha256():
    data = b"the same content"
    assert crypto.chunk_id(ID_KEY, data) == hmac.new(ID_KEY, data, hashlib.sha256).hexdigest()
    assert crypto.chunk_id(ID_KEY, data) == crypto.chunk_id(ID_KEY, bytearray(data))
    assert crypto.chunk_id(ID_KEY, data) != crypto.chunk_id(CONTENT_KEY, data)
    assert crypto.chunk_id(ID_KEY, data) != hashlib.sha256(data).hexdigest()


def test_chunk_round_trip_and_blob_format():
    data = random_bytes(100_000, 1)
    chunk_id = crypto.chunk_id(ID_KEY, data)
    blob = crypto.encrypt_chunk(CONTENT_KEY, chunk_id, data)
    assert blob[:5] == b"CDPE\x01" and len(blob) == crypto.encrypted_size(len(data))
    assert data[:64] not in blob
    assert crypto.encrypt_chunk(CONTENT_KEY, chunk_id, data) != blob  # fresh nonce each time
    assert crypto.decrypt_chunk(CONTENT_KEY, chunk_id, blob, ID_KEY) == data


def test_tampered_or_swapped_chunks_fail():
    a, b = b"chunk a" * 1000, b"chunk b" * 1000
    id_a, id_b = crypto.chunk_id(ID_KEY, a), crypto.chunk_id(ID_KEY, b)
    blob_a, blob_b = crypto.encrypt_chunk(CONTENT_KEY, id_a, a), crypto.encrypt_chunk(CONTENT_KEY, id_b, b)
    flipped = bytearray(blob_a)
    flipped[40] ^= 1
    with pytest.raises(crypto.CorruptContent, match=f"chunk {id_a} is damaged"):
        crypto.decrypt_chunk(CONTENT_KEY, id_a, bytes(flipped))
    with pytest.raises(crypto.CorruptContent):  # storage serving b's blob under a's name
        crypto.decrypt_chunk(CONTENT_KEY, id_a, blob_b)
    with pytest.raises(crypto.CorruptContent):
        crypto.decrypt_chunk(bytes(32), id_a, blob_a)
    with pytest.raises(crypto.CorruptContent, match="not a cdp encrypted blob"):
        crypto.decrypt_chunk(CONTENT_KEY, id_a, b"CDPE\x02" + blob_a[5:])
    # a chunk encrypted under a wrong id decrypts under that id but fails the id check
    liar = crypto.encrypt_chunk(CONTENT_KEY, id_a, b)
    with pytest.raises(crypto.CorruptContent, match="does not match its id"):
        crypto.decrypt_chunk(CONTENT_KEY, id_a, liar, ID_KEY)


def test_manifest_is_bound_to_package_and_version():
    blob = crypto.encrypt_manifest(CONTENT_KEY, "app", "1.0", b'{"x": 1}')
    assert crypto.decrypt_manifest(CONTENT_KEY, "app", "1.0", blob) == b'{"x": 1}'
    for package, version in (("app", "2.0"), ("app2", "1.0")):
        with pytest.raises(crypto.CorruptContent, match="manifest"):
            crypto.decrypt_manifest(CONTENT_KEY, package, version, blob)
    chunk_like = crypto.encrypt_chunk(CONTENT_KEY, "ab" * 32, b'{"x": 1}')
    with pytest.raises(crypto.CorruptContent):
        crypto.decrypt_manifest(CONTENT_KEY, "app", "1.0", chunk_like)


# chunking


def pieces_of(data: bytes) -> list[chunking.Piece]:
    return list(chunking.cut(io.BytesIO(data)))


def test_chunks_cover_the_stream_within_size_bounds():
    data = random_bytes(12 * MiB, 2)
    pieces = pieces_of(data)
    assert b"".join(p.data for p in pieces) == data
    assert [p.offset for p in pieces] == [sum(q.size for q in pieces[:i]) for i in range(len(pieces))]
    assert all(chunking.CHUNK_MIN <= p.size <= chunking.CHUNK_MAX for p in pieces[:-1])
    assert pieces_of(b"") == []
    assert [p.data for p in pieces_of(b"small")] == [b"small"]


def test_chunk_boundaries_survive_a_change_in_the_middle():
    v1 = random_bytes(16 * MiB, 3)
    middle = 8 * MiB
    v2 = v1[:middle] + random_bytes(64 * 1024, 4) + v1[middle + 64 * 1024 :]
    inserted = v1[:middle] + b"inserted bytes" + v1[middle:]
    old = {p.data for p in pieces_of(v1)}
    for new_version in (v2, inserted):
        new = [p for p in pieces_of(new_version) if p.data not in old]
        assert sum(p.size for p in new) <= 2 * chunking.CHUNK_MAX
        assert all(p.offset + p.size > middle - chunking.CHUNK_MAX for p in new)
        assert all(p.offset < middle + chunking.CHUNK_MAX + 64 * 1024 for p in new)


# storage error messages


def test_storage_errors_are_one_line_without_sas():
    from azure.core.exceptions import HttpResponseError, ServiceRequestError

    from provisioner.content.store import describe

    refused = ServiceRequestError("https://a.blob/c?sv=2024&sig=SECRET%3D&se=2030 refused\nmore lines")
    assert describe(refused) == "https://a.blob/c?sv=2024&sig=***&se=2030 refused"
    assert "SECRET" not in describe(HttpResponseError(message="x?sig=SECRET\n<xml/>"))
