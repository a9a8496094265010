"""`cdp distribute` and `cdp content ...` end to end: the real CLI in a subprocess, a provisioned
distribution point on the local cloud (real Azurite over HTTPS), the stored blobs read back raw.

The stored content is decrypted here independently of cdp's modules: ``cryptography``'s AES-GCM
and AES key unwrap, HMAC-SHA256 from the standard library, the site's master key file and its
state database read directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from provisioner.localcloud import LocalCloud
from provisioner.site import Site

from helpers import cdp, cdp_json, error_lines, local_site
from independent import restore, snapshot
from packs import corrupt_chunk, drop_pack_of, pack_sizes, stored_chunks
from trees import MARKER, mixed_tree

MiB = 1024 * 1024
RESULT_KEYS = {"distribution_point", "status", "bytes_total", "bytes_uploaded", "chunks_total",
               "chunks_uploaded", "seconds", "error"}


# -- the site and the CLI ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with local_site(tmp_path_factory, "distribute", provision=("dp1",)) as home:
        yield home

def account(home, name="dp1"):
    """The distribution point's storage account, as a client holding its key (raw access)."""
    dp = cdp_json(home, "status", name)["distribution_points"][0]
    return LocalCloud(Site.open(home)).blob_service_client(dp["storage_account"])


def container_of(service, package: str):
    return service.get_container_client("pkg-" + hashlib.sha256(package.encode()).hexdigest()[:32])


def chunk_blobs(container) -> dict[str, int]:
    """chunk id -> stored size, for every chunk in the container's packs."""
    return {chunk_id: size for chunk_id, (_, _, size) in stored_chunks(container).items()}


def state_rows(home, sql, params=()):
    with sqlite3.connect(Path(home) / "state.db") as db:
        return db.execute(sql, params).fetchall()


# -- the independent reader --------------------------------------------------------------------


def random_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for _ in range(0, size, MiB):
            out.write(os.urandom(MiB))


# -- the tests ---------------------------------------------------------------------------------


def test_a_mixed_tree_is_stored_encrypted_and_decrypts_independently(home, tmp_path):
    source = tmp_path / "source"
    mixed_tree(source)
    total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())

    result = cdp_json(home, "distribute", source, "--package", "tree", "--version", "1", "--to", "dp1")

    assert set(result) == {"package", "version", "results"}
    assert result["package"] == "tree" and result["version"] == "1"
    (dp1,) = result["results"]
    assert set(dp1) == RESULT_KEYS
    assert dp1["distribution_point"] == "dp1" and dp1["status"] == "uploaded" and dp1["error"] is None
    assert dp1["bytes_total"] == dp1["bytes_uploaded"] == total
    assert dp1["chunks_total"] == dp1["chunks_uploaded"] > 10
    assert isinstance(dp1["seconds"], float)

    container = container_of(account(home), "tree")
    blobs = {b.name: container.download_blob(b.name).readall() for b in container.list_blobs()}
    packs = {n for n in blobs if re.fullmatch(r"packs/[0-9a-f]{32}", n)}
    assert set(blobs) == {"current", "manifests/1", "chunklists/1"} | packs
    assert len(chunk_blobs(container)) == dp1["chunks_total"]
    for name, data in blobs.items():
        assert MARKER not in data, name
        for word in ("naïve".encode(), "Ärger".encode(), b"setup program", b"file 0001", b"small/"):
            assert word not in data and word not in name.encode(), (name, word)
    assert json.loads(blobs["current"]) == {"format": 1, "version": "1"}

    restored = tmp_path / "restored"
    restored.mkdir()
    doc = restore(container, home, "tree", restored)
    assert snapshot(restored) == snapshot(source)
    assert len(doc["files"]) == 1004 and doc["type"] == "application"

    again = cdp_json(home, "distribute", source, "--package", "tree", "--version", "1", "--to", "dp1")
    (dp1,) = again["results"]
    assert dp1["status"] == "uploaded" and dp1["bytes_uploaded"] == 0 and dp1["chunks_uploaded"] == 0
    assert dp1["bytes_total"] == total


def test_a_new_version_of_256_mib_with_1_mib_changed_uploads_only_the_change(home, tmp_path):
    v1, v2 = tmp_path / "v1" / "image.wim", tmp_path / "v2" / "image.wim"
    random_file(v1, 256 * MiB)
    v2.parent.mkdir()
    with v1.open("rb") as src, v2.open("wb") as dst:
        dst.write(src.read(128 * MiB))
        dst.write(os.urandom(MiB))
        src.seek(MiB, os.SEEK_CUR)
        while block := src.read(16 * MiB):
            dst.write(block)
    assert v2.stat().st_size == 256 * MiB

    first = cdp_json(home, "distribute", v1, "--package", "image", "--version", "1", "--to", "dp1",
                     "--type", "os-upgrade")["results"][0]
    second = cdp_json(home, "distribute", v2, "--package", "image", "--version", "2", "--to", "dp1",
                      "--type", "os-upgrade")["results"][0]

    assert first["bytes_uploaded"] == first["bytes_total"] == 256 * MiB
    assert second["status"] == "uploaded" and second["bytes_total"] == 256 * MiB
    assert 0 < second["bytes_uploaded"] <= 0.04 * second["bytes_total"], second
    print(f"\nversion 2 uploaded {second['bytes_uploaded']:,} of {second['bytes_total']:,} bytes "
          f"({100 * second['bytes_uploaded'] / second['bytes_total']:.2f}%), "
          f"{second['chunks_uploaded']}/{second['chunks_total']} chunks")
    container = container_of(account(home), "image")
    assert json.loads(container.download_blob("current").readall())["version"] == "2"

    gone = cdp(home, "content", "remove", "--package", "image", "--yes")  # the whole package
    assert gone.returncode == 0, gone.stderr
    assert not container.exists()
    assert state_rows(home, "SELECT * FROM package_versions WHERE package_id = 'image'") == []


def test_corrupt_and_missing_chunks_are_reported_and_repaired(home, tmp_path):
    source = tmp_path / "fix"
    random_file(source / "payload.bin", 12 * MiB)
    (source / "readme.txt").write_text("read me\n")
    cdp_json(home, "distribute", source, "--package", "fix", "--version", "1.0", "--to", "dp1")
    assert cdp_json(home, "content", "validate", "--package", "fix")["ok"] is True

    container = container_of(account(home), "fix")
    where = stored_chunks(container)
    first, last = min(where.items(), key=lambda item: item[1]), max(where.items(), key=lambda item: item[1])
    assert first[1][0] != last[1][0]  # in two packs
    corrupt = first[0]
    corrupt_chunk(container, corrupt)  # altered bytes, same length
    missing = drop_pack_of(container, last[0])
    lost = len(missing)

    checked = cdp(home, "content", "validate", "--package", "fix", "--json")
    assert checked.returncode == 1
    (report,) = json.loads(checked.stdout)["reports"]
    assert report["distribution_point"] == "dp1" and report["version"] == "1.0" and not report["ok"]
    assert report["corrupt"] == [corrupt]
    assert report["missing"] == sorted(missing)
    (line,) = error_lines(checked.stderr)
    assert "dp1" in line and "1.0" in line and f"{lost} missing, 1 corrupt" in line

    human = cdp(home, "content", "validate", "--package", "fix")
    assert human.returncode == 1 and f"{lost} missing, 1 corrupt" in human.stdout

    repaired = cdp(home, "content", "redistribute", "--package", "fix", "--json")
    assert repaired.returncode == 0, repaired.stderr
    (fixed,) = json.loads(repaired.stdout)["repaired"]
    assert fixed["distribution_point"] == "dp1" and fixed["status"] == "uploaded"
    assert fixed["chunks_uploaded"] == lost + 1
    assert cdp_json(home, "content", "validate", "--package", "fix")["ok"] is True
    assert json.loads(container.download_blob("current").readall())["version"] == "1.0"
    restore(container, home, "fix", tmp_path / "check")
    assert snapshot(tmp_path / "check") == snapshot(source)

    # A source that changed since is not used to "repair" the version.
    drop_pack_of(container, last[0])
    held = pack_sizes(container)
    (source / "readme.txt").write_text("READ ME\n")  # same size, other bytes
    refused = cdp(home, "content", "redistribute", "--package", "fix")
    assert refused.returncode == 1
    (line,) = error_lines(refused.stderr)
    assert "changed since 1.0 was distributed" in line
    assert pack_sizes(container) == held  # nothing stored from the changed source


def test_list_and_remove_collect_unused_chunks(home, tmp_path):
    base = os.urandom(4 * MiB)
    for version, tail in (("1", os.urandom(3 * MiB)), ("2", os.urandom(3 * MiB)), ("3", b"three")):
        folder = tmp_path / version
        folder.mkdir()
        (folder / "app.bin").write_bytes(base + tail)
        cdp_json(home, "distribute", folder, "--package", "lr", "--version", version, "--to", "dp1")
    container = container_of(account(home), "lr")

    listed = cdp_json(home, "content", "list", "--package", "lr")
    (row,) = listed["content"]
    assert row["distribution_point"] == "dp1" and row["package"] == "lr"
    assert row["versions"] == ["1", "2", "3"] and row["current"] == "3"
    assert row["version_bytes"] == {"1": 7 * MiB, "2": 7 * MiB, "3": 4 * MiB + 5}
    assert row["chunks"] == len(chunk_blobs(container))
    assert row["stored_bytes"] == sum(chunk_blobs(container).values())
    everything = cdp(home, "content", "list")
    assert everything.returncode == 0 and "dp1: lr versions 1" in everything.stdout

    asked = cdp(home, "content", "remove", "--package", "lr", "--version", "1")  # no --yes, no answer
    assert asked.returncode == 1
    assert cdp_json(home, "content", "list", "--package", "lr")["content"][0]["versions"] == ["1", "2", "3"]

    before = len(chunk_blobs(container))
    removed = cdp_json(home, "content", "remove", "--package", "lr", "--version", "1", "--yes")
    (entry,) = removed["removed"]
    assert entry["distribution_point"] == "dp1" and entry["chunks_deleted"] > 0
    assert len(chunk_blobs(container)) == before - entry["chunks_deleted"]
    names = set(container.list_blob_names())
    assert {"manifests/2", "chunklists/2"} <= names and not names & {"manifests/1", "chunklists/1"}
    assert cdp_json(home, "content", "validate", "--package", "lr", "--version", "2")["ok"] is True
    assert cdp_json(home, "content", "validate", "--package", "lr")["ok"] is True
    assert [v for (v,) in state_rows(home, "SELECT version FROM package_versions WHERE package_id = 'lr'"
                                           " ORDER BY version")] == ["2", "3"]

    # Removing the current version moves `current` to the one that remains newest.
    cdp_json(home, "content", "remove", "--package", "lr", "--version", "3", "--yes")
    assert json.loads(container.download_blob("current").readall())["version"] == "2"
    row = cdp_json(home, "content", "list", "--package", "lr")["content"][0]
    assert row["versions"] == ["2"] and row["current"] == "2"
    assert cdp_json(home, "content", "validate", "--package", "lr")["ok"] is True

    unknown = cdp(home, "content", "remove", "--package", "lr", "--version", "9", "--yes")
    assert unknown.returncode == 2 and "not on any distribution point" in error_lines(unknown.stderr)[0]


def test_status_shows_stored_bytes_and_storage_alerts(home):
    assert cdp(home, "content", "list").returncode == 0  # refreshes the site's chunk index
    service = account(home)
    stored = sum(size for c in service.list_containers() for size in chunk_blobs(
        service.get_container_client(c.name)).values())
    assert stored > 0
    usage = cdp_json(home, "status", "dp1")["distribution_points"][0]["storage"]
    assert usage == {"stored_bytes": stored, "threshold_bytes": 2000 * 1000**3,
                     "percent": round(100 * stored / (2000 * 1000**3), 2), "alert": None}

    config = Path(home) / "cdp.toml"
    try:
        for percent, alert in ((70, "warning"), (95, "critical"), (30, None)):
            threshold_gb = stored * 100 / percent / 1000**3
            config.write_text(f"[alerts]\nstorage_threshold_gb = {threshold_gb!r}\n")
            usage = cdp_json(home, "status")["distribution_points"][0]["storage"]
            assert usage["alert"] == alert and abs(usage["percent"] - percent) < 0.1, usage
            human = cdp(home, "status", "dp1").stdout
            assert f"{stored:,} bytes stored" in human
            assert (f"ALERT {alert}" in human) if alert else ("ALERT" not in human)
        config.write_text("[alerts]\nstorage_threshold_gb = 0.0001\nwarning_percent = 10\n"
                          "critical_percent = 20\n")
        assert cdp_json(home, "status", "dp1")["distribution_points"][0]["storage"]["alert"] == "critical"
    finally:
        config.unlink()
