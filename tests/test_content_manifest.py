"""Scanning PATH, the package stream and the manifest (no storage)."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime

import pytest

from provisioner.content import chunking, crypto, manifest
from provisioner.content.keys import PackageKeys
from provisioner.errors import CdpError, UsageError

KEYS = PackageKeys("app", bytes(range(32)), bytes(range(32, 64)))


def make_tree(root):
    files = {
        "b/nested/deep/file.bin": os.urandom(300_000),
        "a file with spaces.txt": b"spaces\n",
        "Ünïcödé/naïve café.txt": "non-ASCII ✓\n".encode(),
        "empty.txt": b"",
        "b/small.cfg": b"k=v\n",
        "a-b.txt": b"sorts after the folder a? no: 'a file' < 'a-b' < 'b'\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "b/small.cfg").chmod(0o600)
    (root / "empty folder").mkdir()
    (root / "b/nested/also empty").mkdir()
    return files


def read_all(tree: manifest.Tree) -> list[chunking.Piece]:
    with tree.open() as stream:
        return list(chunking.cut(stream))


def test_manifest_of_a_mixed_tree(tmp_path):
    files = make_tree(tmp_path)
    tree = manifest.scan(tmp_path)
    paths = [entry.path for entry in tree.files]
    assert paths == sorted(files, key=lambda p: p.split("/"))
    assert [d["path"] for d in tree.empty_dirs] == ["b/nested/also empty", "empty folder"]

    pieces = read_all(tree)
    stream = b"".join(p.data for p in pieces)
    chunks = [{"id": crypto.chunk_id(KEYS.id_key, p.data), "size": p.size} for p in pieces]
    created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    doc = manifest.build(tree, chunks, package="app", version="1.0", content_type="application", created=created)

    assert doc["size"] == len(stream) == sum(map(len, files.values()))
    assert doc["created"] == "2024-05-01T12:00:00Z" and doc["type"] == "application"
    for entry in doc["files"]:
        data = files[entry["path"]]
        assert stream[entry["offset"] : entry["offset"] + entry["size"]] == data
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    modes = {entry["path"]: entry["mode"] for entry in doc["files"]}
    assert modes["b/small.cfg"] == 0o600
    assert doc["chunks"] == chunks

    sealed = manifest.seal(doc, KEYS)
    assert b"spaces" not in sealed and "café".encode() not in sealed
    assert manifest.unseal(sealed, KEYS, "1.0") == json.loads(json.dumps(doc))
    with pytest.raises(crypto.CorruptContent):
        manifest.unseal(sealed, KEYS, "2.0")


def test_a_single_file_is_held_by_its_base_name(tmp_path):
    (tmp_path / "setup tool.msi").write_bytes(b"x" * 1000)
    tree = manifest.scan(tmp_path / "setup tool.msi")
    assert [(e.path, e.size, e.offset) for e in tree.files] == [("setup tool.msi", 1000, 0)]
    assert tree.empty_dirs == []


def test_symlinks_inside_the_tree_are_followed(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real/data.txt").write_bytes(b"data")
    os.symlink("real/data.txt", tmp_path / "link.txt")
    os.symlink("real", tmp_path / "linked folder")
    tree = manifest.scan(tmp_path)
    assert [e.path for e in tree.files] == ["link.txt", "linked folder/data.txt", "real/data.txt"]
    read_all(tree)
    assert {e.sha256 for e in tree.files} == {hashlib.sha256(b"data").hexdigest()}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: os.symlink("/etc/hostname", root / "out"), "out: symlink leaves the package folder"),
        (lambda root: os.symlink("..", root / "up"), "up: symlink leaves the package folder"),
        (lambda root: os.symlink("missing", root / "dangling"), "dangling: broken symlink"),
        (lambda root: os.symlink(".", root / "loop"), "loop: symlink loop"),
        (lambda root: os.mkfifo(root / "pipe"), "pipe: not a regular file or folder"),
    ],
)
def test_refused_entries_are_named(tmp_path, make, message):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "ok.txt").write_bytes(b"ok")
    make(root)
    with pytest.raises(UsageError, match=message):
        manifest.scan(root)


def test_missing_path_and_undecodable_names(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        manifest.scan(tmp_path / "nope")
    os.mkdir(os.path.join(os.fsencode(tmp_path), b"bad\xffname"))
    with pytest.raises(UsageError, match="not valid UTF-8"):
        manifest.scan(tmp_path)


def test_a_file_that_changes_while_being_read_is_refused(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"a" * 1000)
    (tmp_path / "b.bin").write_bytes(b"b" * 1000)
    tree = manifest.scan(tmp_path)
    (tmp_path / "a.bin").write_bytes(b"a" * 10)
    with pytest.raises(CdpError, match="a.bin changed while being read"):
        read_all(tree)
    tree = manifest.scan(tmp_path)
    (tmp_path / "b.bin").write_bytes(b"b" * 2000)
    with pytest.raises(CdpError, match="b.bin changed while being read"):
        read_all(tree)


def test_build_refuses_an_unread_stream_and_bad_types(tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    tree = manifest.scan(tmp_path)
    with pytest.raises(ValueError, match="not read"):
        manifest.build(tree, [], package="app", version="1", content_type="package")
    read_all(tree)
    with pytest.raises(UsageError, match="bad content type"):
        manifest.build(tree, [{"id": "x", "size": 1}], package="app", version="1", content_type="App V")
