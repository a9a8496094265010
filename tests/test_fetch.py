"""`cdp locate` and `cdp fetch` end to end: the real CLI in a subprocess against two distribution
points provisioned on the local cloud (real Azurite and real front ends over HTTPS).

Stored blobs are corrupted with the storage account's key (what an attacker or bit rot would
do); bundles are altered the way a client could alter its own file. Every command's stdout and
stderr is checked for secrets: no SAS signature, no token, no key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from provisioner.localcloud import LocalCloud
from provisioner.site import Site

from helpers import cdp, command, local_site
from packs import corrupt_chunk, drop_pack_of, stored_chunks

MiB = 1024 * 1024
BIG = 256 * MiB


# -- the site, the CLI, and what every output must not hold -------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with local_site(tmp_path_factory, "fetch", provision=("dp1", "dp2")) as home:
        (home / "cdp.toml").write_text(
            '[boundary_groups.branch]\nclients = ["branch-*"]\ndistribution_points = ["dp1"]\n')
        yield home


SECRETS: set[str] = {"sig=", "Bearer", "AccountKey"}


def ok(home, *args) -> subprocess.CompletedProcess:
    proc = cdp(home, *args)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    no_secret(proc)
    return proc


def ok_json(home, *args) -> dict:
    return json.loads(ok(home, *args, "--json").stdout)


def no_secret(proc: subprocess.CompletedProcess) -> None:
    for secret in SECRETS:
        assert secret not in proc.stdout and secret not in proc.stderr, f"{secret[:12]}... in the output"


def one_error(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    """The failure's one error line (progress lines may come before it); no traceback."""
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    no_secret(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    return errors[0]


def issue(home, folder: Path, client: str, *packages: str, ttl: str | None = None) -> Path:
    """An access bundle; its token and keys join the secrets no output may show."""
    path = folder / f"{client}-{'-'.join(packages)}.json"
    args = ["token", "issue", "--client", client, "--out", path]
    for package in packages:
        args += ["--package", package]
    ok(home, *args, *(["--ttl", ttl] if ttl else []))
    bundle = json.loads(path.read_text())
    SECRETS.add(bundle["token"])
    SECRETS.update(value for keys in bundle["keys"] for value in (keys["content_key"], keys["id_key"]))
    return path


def edited(path: Path, folder: Path, name: str, change) -> Path:
    bundle = json.loads(path.read_text())
    change(bundle)
    out = folder / name
    out.write_text(json.dumps(bundle))
    out.chmod(0o600)
    return out


def fetch(home, bundle: Path, package: str, dest: Path, *more) -> subprocess.CompletedProcess:
    return cdp(home, "fetch", "--access", bundle, "--package", package, "--dest", dest, *more)


def fetched(home, bundle: Path, package: str, dest: Path, *more) -> tuple[dict, str]:
    """Fetch that must succeed: its --json result and its stderr."""
    proc = fetch(home, bundle, package, dest, *more, "--json")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    no_secret(proc)
    result = json.loads(proc.stdout)
    assert set(result) >= {"package", "version", "source", "files", "bytes_total", "bytes_downloaded", "seconds"}
    return result, proc.stderr


def tree(root: Path) -> dict[str, tuple]:
    """Every file (bytes hash, mode) and folder (mode) under root, DIR/.cdp left out."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not (Path(folder) == root and d == ".cdp"))
        for name in dirs:
            path = Path(folder, name)
            found[path.relative_to(root).as_posix() + "/"] = ("dir", stat.S_IMODE(path.stat().st_mode))
        for name in files:
            path = Path(folder, name)
            found[path.relative_to(root).as_posix()] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                                        stat.S_IMODE(path.stat().st_mode))
    return found


def write_random(path: Path, size: int, seed: int) -> None:
    """Incompressible bytes, reproducible, written in 1 MiB pieces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for block in range(0, size, MiB):
            fh.write(hashlib.shake_256(f"{seed}:{block}".encode()).digest(min(MiB, size - block)))


def account(home, name: str):
    dp = ok_json(home, "status", name)["distribution_points"][0]
    return LocalCloud(Site.open(home)).blob_service_client(dp["storage_account"])


def container_of(home, dp: str, package: str):
    return account(home, dp).get_container_client("pkg-" + hashlib.sha256(package.encode()).hexdigest()[:32])


@pytest.fixture(scope="module")
def tiny(home, tmp_path_factory):
    """Two small packages on both distribution points, and a bundle covering the first one."""
    folder = tmp_path_factory.mktemp("tiny")
    for package in ("tiny", "other"):
        write_random(folder / package / "setup.bin", 300_000, seed=len(package))
        (folder / package / "readme.txt").write_text(f"{package}\n")
        ok(home, "distribute", folder / package, "--package", package, "--version", "1.0", "--to", "dp1", "--to", "dp2")
    return issue(home, folder, "pc-tiny", "tiny")


# -- the tests -----------------------------------------------------------------------------------


def test_mixed_tree_arrives_identical(home, tmp_path):
    src = tmp_path / "src"
    write_random(src / "deep/er/still/payload.bin", 3 * MiB + 17, seed=1)
    (src / "with space").mkdir()
    (src / "with space/naïve café ü.txt").write_text("grüße\n", encoding="utf-8")
    (src / "empty.dat").write_bytes(b"")
    (src / "bin").mkdir()
    (src / "bin/run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "bin/run.sh").chmod(0o755)
    (src / "docs").mkdir()
    (src / "docs/READ ONLY.txt").write_text("do not change\n")
    (src / "docs/READ ONLY.txt").chmod(0o444)
    (src / "nothing/here").mkdir(parents=True)
    (src / "nothing/here").chmod(0o750)
    ok(home, "distribute", src, "--package", "mixed", "--version", "1.0", "--to", "dp1", "--to", "dp2")
    bundle = issue(home, tmp_path, "pc-mixed", "mixed")

    located = ok_json(home, "locate", "--access", bundle, "--package", "mixed")
    assert located["distribution_point"] == "dp1" and located["version"] == "1.0"
    assert located["sas"] == "<redacted>" and located["container_url"].startswith("https://")
    human = ok(home, "locate", "--access", bundle, "--package", "mixed", "--version", "1.0").stdout
    assert "mixed 1.0 on dp1" in human

    dest = tmp_path / "dest"
    result, _ = fetched(home, bundle, "mixed", dest)
    assert result["package"] == "mixed" and result["version"] == "1.0" and result["source"] == "dp1"
    assert result["files"] == 5 and result["bytes_total"] == sum(
        p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert result["bytes_downloaded"] >= result["bytes_total"]
    assert tree(dest) == tree(src)
    assert (dest / "nothing/here").is_dir() and stat.S_IMODE((dest / "bin/run.sh").stat().st_mode) == 0o755

    again, _ = fetched(home, bundle, "mixed", dest, "--version", "1.0")
    assert again["bytes_downloaded"] < 2_000  # the manifest; every chunk was found in DEST
    assert tree(dest) == tree(src)
    leftovers = [p for p in (dest / ".cdp").rglob("*") if "staging" in p.parts or p.name.endswith(".tmp")]
    assert leftovers == []

    v2 = tmp_path / "v2"  # a file and its folder go, a file changes, one comes
    shutil.copytree(src, v2)
    shutil.rmtree(v2 / "docs")
    (v2 / "bin/run.sh").write_text("#!/bin/sh\necho version 2\n")
    (v2 / "added").mkdir()
    (v2 / "added/new.txt").write_text("new in 2.0\n")
    ok(home, "distribute", v2, "--package", "mixed", "--version", "2.0", "--to", "dp1", "--to", "dp2")
    update, _ = fetched(home, bundle, "mixed", dest)
    assert update["version"] == "2.0" and update["bytes_downloaded"] < update["bytes_total"]
    assert tree(dest) == tree(v2)


@pytest.fixture(scope="module")
def big(home, tmp_path_factory):
    """A 256 MiB file as v1 and as v2 with 1 MiB changed in the middle, on dp1."""
    folder = tmp_path_factory.mktemp("big")
    write_random(folder / "v1/disk.img", BIG, seed=7)
    (folder / "v2").mkdir()
    with open(folder / "v1/disk.img", "rb") as old, open(folder / "v2/disk.img", "wb") as new:
        for block in range(0, BIG, MiB):
            data = old.read(MiB)
            new.write(hashlib.shake_256(b"changed").digest(MiB) if block == BIG // 2 else data)
    for version in ("1", "2"):
        ok(home, "distribute", folder / f"v{version}", "--package", "big", "--version", version, "--to", "dp1")
    return folder, issue(home, folder, "pc-big", "big")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def test_client_with_v1_downloads_only_what_changed(home, big, tmp_path):
    folder, bundle = big
    dest = tmp_path / "dest"
    first, _ = fetched(home, bundle, "big", dest, "--version", "1")
    assert first["version"] == "1" and first["bytes_downloaded"] >= BIG
    second, _ = fetched(home, bundle, "big", dest)
    assert second["version"] == "2" and second["bytes_total"] == BIG
    assert second["bytes_downloaded"] <= 0.04 * BIG, second
    assert sha256(dest / "disk.img") == sha256(folder / "v2/disk.img")
    print(f"\nv1 -> v2 downloaded {second['bytes_downloaded']:,} of {BIG:,} bytes "
          f"({100 * second['bytes_downloaded'] / BIG:.2f}%); v1 took {first['seconds']} s, v2 {second['seconds']} s")


def test_an_interrupted_fetch_resumes(home, big, tmp_path):
    folder, bundle = big
    dest = tmp_path / "dest"
    journal = dest / ".cdp/packages/big/staging/journal"
    argv, environ = command(home, "fetch", "--access", bundle, "--package", "big", "--dest", dest)
    proc = subprocess.Popen(argv, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 8:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the fetch ended before it could be interrupted"
    assert not (dest / "disk.img").exists()  # nothing in DEST before the whole version is verified

    result, _ = fetched(home, bundle, "big", dest)
    assert result["version"] == "2"
    assert result["bytes_downloaded"] < BIG - 8 * 256 * 1024  # at least 8 chunks were kept
    assert sha256(dest / "disk.img") == sha256(folder / "v2/disk.img")
    print(f"\nresumed: downloaded {result['bytes_downloaded']:,} of {BIG:,} bytes")


def test_damaged_chunk_fails_naming_the_file_and_leaves_dest_alone(home, tmp_path):
    src1, src2 = tmp_path / "v1", tmp_path / "v2"
    write_random(src1 / "app.bin", 3 * MiB, seed=3)
    write_random(src2 / "app.bin", 3 * MiB, seed=4)  # every chunk is new in v2, and all of app.bin
    for src in (src1, src2):
        (src / "empty.txt").write_bytes(b"")
    ok(home, "distribute", src1, "--package", "fragile", "--version", "1", "--to", "dp1", "--to", "dp2")
    bundle = issue(home, tmp_path, "pc-fragile", "fragile")
    dest = tmp_path / "dest"
    fetched(home, bundle, "fragile", dest)
    before = tree(dest)

    containers = {dp: container_of(home, dp, "fragile") for dp in ("dp1", "dp2")}
    old = set(stored_chunks(containers["dp1"]))
    ok(home, "distribute", src2, "--package", "fragile", "--version", "2", "--to", "dp1", "--to", "dp2")
    chunk_id = min(set(stored_chunks(containers["dp1"])) - old)
    intact = {}  # each DP stores the chunk in its own pack
    for dp, container in containers.items():
        pack = container.get_blob_client(stored_chunks(container)[chunk_id][0])
        intact[dp] = (pack, pack.download_blob().readall(), pack.get_blob_properties().metadata)
        corrupt_chunk(container, chunk_id)

    failed = fetch(home, bundle, "fragile", dest)
    line = one_error(failed)
    assert "app.bin" in line and chunk_id in line and "damaged" in line, line
    assert "dp1: file app.bin is damaged" in failed.stderr and "trying dp2" in failed.stderr
    assert tree(dest) == before  # v1 intact, no partial or corrupt file
    assert not (dest / ".cdp/packages/fragile/staging").exists()
    assert [p for p in dest.rglob("*") if p.name.endswith(".tmp")] == []

    pack, data, metadata = intact["dp2"]
    pack.upload_blob(data, overwrite=True, metadata=metadata)  # one intact copy is enough
    result, stderr = fetched(home, bundle, "fragile", dest)
    assert result["version"] == "2" and result["source"] == "dp2"
    assert f"dp1: file app.bin is damaged (chunk {chunk_id}" in stderr and "trying dp2" in stderr
    assert tree(dest) == tree(src2)


def test_a_source_failing_midway_hands_over_to_the_next(home, tmp_path):
    src = tmp_path / "src"
    write_random(src / "payload.bin", 8 * MiB, seed=11)
    ok(home, "distribute", src, "--package", "halfway", "--version", "1", "--to", "dp1", "--to", "dp2")
    bundle = issue(home, tmp_path, "pc-halfway", "halfway")
    dp1 = container_of(home, "dp1", "halfway")
    where = stored_chunks(dp1)
    assert len({pack for pack, _, _ in where.values()}) >= 2
    lost = drop_pack_of(dp1, max(where))  # dp1 serves the location and the manifest, then lacks a pack
    chunks = list(where)

    result, stderr = fetched(home, bundle, "halfway", tmp_path / "dest")
    assert result["source"] == "dp2"
    assert any(f"dp1: chunk {c} is not in its storage, trying dp2" in stderr for c in lost), stderr
    # What dp1 delivered was kept: every chunk came over the network once; the manifest three
    # times (dp1's again when the pack was gone, in case a removal had moved it; dp2's).
    assert result["bytes_downloaded"] < result["bytes_total"] + len(chunks) * 64 + 3 * 4096
    assert tree(tmp_path / "dest") == tree(src)


def test_a_pack_compacted_by_a_removal_midway_is_read_from_where_it_went(home, tmp_path):
    from provisioner.access import load_bundle
    from provisioner.client.fetch import fetch as fetch_version

    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    write_random(v1 / "b-shared.bin", 3 * MiB, seed=21)
    write_random(v1 / "c-only-in-1.bin", 2 * MiB, seed=22)
    write_random(v2 / "a-new-in-2.bin", 3 * MiB // 2, seed=23)
    shutil.copy(v1 / "b-shared.bin", v2 / "b-shared.bin")
    for version, src in (("1", v1), ("2", v2)):
        ok(home, "distribute", src, "--package", "compacted", "--version", version, "--to", "dp1")
    bundle = load_bundle(issue(home, tmp_path, "pc-compacted", "compacted"))
    before = set(pack for pack, _, _ in stored_chunks(container_of(home, "dp1", "compacted")).values())
    removals = []

    def remove_v1_once(done: int, total: int) -> None:  # while the first range is being staged
        if not removals:
            removals.append(ok(home, "content", "remove", "--package", "compacted", "--version", "1", "--yes"))

    lines = []
    result = fetch_version(bundle, "compacted", tmp_path / "dest", workers=1, progress=remove_v1_once,
                           report=lines.append)
    after = set(pack for pack, _, _ in stored_chunks(container_of(home, "dp1", "compacted")).values())
    assert removals and after - before and before - after  # a pack v2 uses was compacted into a new one
    assert result.source == "dp1" and result.version == "2", lines
    assert tree(tmp_path / "dest") == tree(v2)
    # The staged chunks were kept: only the manifest came twice.
    assert result.bytes_downloaded < result.bytes_total + 64 * 1024


def test_refused_tokens_fail_with_one_line(home, tiny, tmp_path):
    dest = tmp_path / "dest"
    fetched(home, tiny, "tiny", dest)  # the bundle itself is good

    def tamper(bundle):
        head, claims, signature = bundle["token"].split(".")
        bundle["token"] = ".".join((head, claims, ("A" if signature[0] != "A" else "B") + signature[1:]))

    line = one_error(fetch(home, edited(tiny, tmp_path, "tampered.json", tamper), "tiny", tmp_path / "t"))
    assert "signature" in line and "(401)" in line and "dp1" in line and "dp2" in line, line

    expired = issue(home, tmp_path, "pc-short", "tiny", ttl="2s")
    time.sleep(3)
    line = one_error(fetch(home, expired, "tiny", tmp_path / "e"))
    assert "expired" in line, line

    other = json.loads(issue(home, tmp_path, "pc-other", "other").read_text())

    def add_other_package(bundle):
        bundle["packages"].append("other")
        bundle["keys"] += other["keys"]

    forged = edited(tiny, tmp_path, "forged.json", add_other_package)
    failed = fetch(home, forged, "other", tmp_path / "o")
    line = one_error(failed)
    assert "does not cover package other (403)" in line, line
    assert "dp1: the access token does not cover package other (403), trying dp2" in failed.stderr

    branch = issue(home, tmp_path, "branch-7", "tiny")  # its boundary group has dp1 only
    assert [s["distribution_point"] for s in json.loads(branch.read_text())["sources"]] == ["dp1"]
    dp2 = ok_json(home, "status", "dp2")["distribution_points"][0]

    def point_at_dp2(bundle):
        bundle["sources"] = [{"distribution_point": "dp2", "service_url": dp2["service_url"],
                              "region": dp2["region"], "target": "local"}]

    line = one_error(fetch(home, edited(branch, tmp_path, "elsewhere.json", point_at_dp2), "tiny", tmp_path / "b"))
    assert "does not cover distribution point dp2 (403)" in line, line
    for folder in ("t", "e", "o", "b"):
        assert not (tmp_path / folder).exists()  # nothing is written before a source serves

    unknown = fetch(home, tiny, "tiny", tmp_path / "u", "--version", "9.9")
    assert one_error(unknown) == "error: package tiny version 9.9 not found on any source"


def test_falls_back_past_an_unreachable_source(home, tiny, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]

    def dead_source_first(bundle):
        bundle["sources"].insert(0, {"distribution_point": "gone", "service_url": f"https://127.0.0.1:{closed}",
                                     "region": "westeurope", "target": "local"})

    bundle = edited(tiny, tmp_path, "dead-first.json", dead_source_first)
    result, stderr = fetched(home, bundle, "tiny", tmp_path / "dest")
    assert result["source"] == "dp1"
    assert "gone: unreachable (connection refused), trying dp1" in stderr
    located = cdp(home, "locate", "--access", bundle, "--package", "tiny")
    assert located.returncode == 0 and "tiny 1.0 on dp1" in located.stdout
    assert "gone: unreachable (connection refused), trying dp1" in located.stderr


def test_stop_sends_clients_to_the_next_source_and_start_brings_them_back(home, tiny, tmp_path):
    ok(home, "stop", "dp1")
    try:
        result, stderr = fetched(home, tiny, "tiny", tmp_path / "while-stopped")
        assert result["source"] == "dp2"
        assert "dp1: stopped (503), trying dp2" in stderr
    finally:
        ok(home, "start", "dp1")
    result, stderr = fetched(home, tiny, "tiny", tmp_path / "after-start")
    assert result["source"] == "dp1" and "trying" not in stderr
