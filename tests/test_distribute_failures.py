"""`cdp distribute` when things go wrong: bad input, a killed distribution, storage stopping in the
middle of an upload, one of several distribution points failing, a stale deployment, and the
per-package lock between distribution and removal. The real CLI against the local cloud."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from provisioner import arm
from provisioner.localcloud import LocalCloud, processes
from provisioner.site import Site

from helpers import cdp, cdp_json, error_lines, local_site, start_cdp, status_of
from packs import stored_chunks

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with local_site(tmp_path_factory, "distribute-failures", provision=("dp1", "dp2")) as home:
        yield home

def account(home, name="dp1"):
    return LocalCloud(Site.open(home)).blob_service_client(status_of(home, name)["storage_account"])


def container_of(service, package: str):
    import hashlib

    return service.get_container_client("pkg-" + hashlib.sha256(package.encode()).hexdigest()[:32])


def current(container) -> str:
    return json.loads(container.download_blob("current").readall())["version"]


def manifests(container) -> list[str]:
    return sorted(n.removeprefix("manifests/") for n in container.list_blob_names(name_starts_with="manifests/"))


def chunk_count(container) -> int:
    """The chunks stored in the container's packs."""
    return len(stored_chunks(container))


def state_rows(home, sql, params=()):
    with sqlite3.connect(Path(home) / "state.db") as db:
        return db.execute(sql, params).fetchall()


def recorded(home, package):
    return [v for (v,) in state_rows(
        home, "SELECT version FROM package_versions WHERE package_id = ? ORDER BY version", (package,))]


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for _ in range(0, size, MiB):
            out.write(os.urandom(MiB))
    return path


def wait_for_chunks(container, proc, at_least: int) -> None:
    """Poll storage until ``at_least`` chunks are stored while ``proc`` is still uploading."""
    deadline = time.monotonic() + 120
    while chunk_count(container) < at_least:
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "no chunks appeared"
        time.sleep(0.05)


@contextmanager
def package_lock(home, package, mode):
    """Hold the site's lock on ``package`` the way a cdp process does (fcntl on CDP_HOME/locks)."""
    folder = Path(home) / "locks"
    folder.mkdir(exist_ok=True)
    with open(folder / f"{package}.lock", "a+b") as handle:
        fcntl.flock(handle, mode | fcntl.LOCK_NB)
        yield


# -- bad input ---------------------------------------------------------------------------------

SEED_REFUSALS = {
    "app-v": "App-V streaming",
    "m365-apps-update": "Microsoft 365 Apps updates",
    "boot-image": "PXE or multicast",
    "pxe": "PXE or multicast",
    "multicast": "PXE or multicast",
    "run-from-dp": "run program from distribution point",
    "microsoft-update": "Microsoft Update",
}


def test_bad_input_exits_2_with_one_line_and_changes_nothing(home, tmp_path):
    source = tmp_path / "bad"
    source.mkdir()
    (source / "setup.exe").write_bytes(b"setup")
    (Path(home) / "cdp.toml").write_text('[groups]\npair = ["dp1", "dp2"]\nghost = ["dp1", "nosuch"]\n')
    ok = ["--package", "bad", "--version", "1"]
    cases = [
        ([tmp_path / "nope", *ok, "--to", "dp1"], "no such file or folder"),
        ([source, *ok, "--to", "nosuch"], "unknown distribution point 'nosuch'"),
        ([source, *ok, "--to", "dp1", "nosuch"], "unknown distribution point 'nosuch'"),
        ([source, *ok, "--group", "nosuch"], "unknown distribution point group 'nosuch'"),
        ([source, *ok, "--group", "ghost"], "unknown distribution point 'nosuch'"),
        ([source, "--package", "bad", "--version", "", "--to", "dp1"], "bad version ''"),
        ([source, "--package", "bad", "--version", "1/2", "--to", "dp1"], "bad version '1/2'"),
        ([source, "--package", "bad", "--version", "../1", "--to", "dp1"], "bad version"),
        ([source, "--package", "bad", "--version", "1 0", "--to", "dp1"], "bad version"),
        ([source, "--package", "bad", "--version", "v" * 65, "--to", "dp1"], "bad version"),
        ([source, "--package", "a b", "--version", "1", "--to", "dp1"], "bad package id 'a b'"),
        ([source, *ok, "--type", "firmware", "--to", "dp1"], "unknown content type 'firmware'"),
        ([source, *ok], "--to NAME... or --group G"),
        ([source, *ok, "--to", "dp1", "--group", "pair"], "--to NAME... or --group G"),
    ]
    cases += [([source, *ok, "--type", kind, "--to", "dp1"], reason) for kind, reason in SEED_REFUSALS.items()]
    tables = ("package_keys", "package_versions", "placements", "chunk_index")
    before = {table: state_rows(home, f"SELECT * FROM {table}") for table in tables}
    service = account(home)
    containers = sorted(c.name for c in service.list_containers())

    try:
        for args, expected in cases:
            proc = cdp(home, "distribute", *args)
            assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
            assert proc.stdout == "", (args, proc.stdout)
            lines = proc.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (args, proc.stderr)
            assert expected in lines[0], (args, lines[0])
    finally:
        (Path(home) / "cdp.toml").unlink()

    assert {table: state_rows(home, f"SELECT * FROM {table}") for table in tables} == before
    assert sorted(c.name for c in service.list_containers()) == containers
    assert not container_of(service, "bad").exists()

    # Microsoft updates: refused above without --force; with it, accepted.
    forced = cdp_json(home, "distribute", source, "--package", "msu", "--version", "1", "--to", "dp1",
                      "--type", "microsoft-update", "--force")
    assert forced["results"][0]["status"] == "uploaded"


# -- interruptions -----------------------------------------------------------------------------


def test_a_killed_distribution_keeps_the_previous_version_and_resumes(home, tmp_path):
    package = "resume"
    (tmp_path / "v1").write_bytes(b"version one")
    big = random_file(tmp_path / "v2", 64 * MiB)
    cdp_json(home, "distribute", tmp_path / "v1", "--package", package, "--version", "1", "--to", "dp1")
    container = container_of(account(home), package)
    assert chunk_count(container) == 1

    proc = start_cdp(home, "distribute", big, "--package", package, "--version", "2", "--to", "dp1", "--json")
    try:
        wait_for_chunks(container, proc, 4)
        # The distribution holds the package lock: a removal (exclusive) could not start now.
        with pytest.raises(BlockingIOError), package_lock(home, package, fcntl.LOCK_EX):
            pass
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -9

    assert current(container) == "1" and manifests(container) == ["1"]
    assert recorded(home, package) == ["1"]
    assert state_rows(home, "SELECT version FROM placements WHERE package_id = ?", (package,)) == [("1",)]
    listed = cdp_json(home, "content", "list", "--package", package)["content"][0]
    assert listed["versions"] == ["1"] and listed["current"] == "1"
    stored_before = chunk_count(container)

    rerun = cdp_json(home, "distribute", big, "--package", package, "--version", "2", "--to", "dp1")
    (result,) = rerun["results"]
    assert result["status"] == "uploaded"
    assert 0 < result["chunks_uploaded"] < result["chunks_total"]
    assert result["chunks_uploaded"] <= result["chunks_total"] - (stored_before - 1)
    assert 0 < result["bytes_uploaded"] < result["bytes_total"] == 64 * MiB
    assert current(container) == "2" and manifests(container) == ["1", "2"]
    assert recorded(home, package) == ["1", "2"]
    assert cdp_json(home, "content", "validate", "--package", package)["ok"] is True


def test_removal_and_distribution_of_a_package_exclude_each_other(home, tmp_path):
    package = "resume"  # from the test above: versions 1 and 2 on dp1
    container = container_of(account(home), package)
    with package_lock(home, package, fcntl.LOCK_SH):  # as a distribution in flight holds it
        refused = cdp(home, "content", "remove", "--package", package, "--version", "1", "--yes")
    assert refused.returncode == 1
    (line,) = error_lines(refused.stderr)
    assert "being distributed or repaired by another cdp process" in line
    assert manifests(container) == ["1", "2"]

    (tmp_path / "v3").write_bytes(b"version three")
    with package_lock(home, package, fcntl.LOCK_EX):  # as a removal in flight holds it
        proc = start_cdp(home, "distribute", tmp_path / "v3", "--package", package, "--version", "3",
                         "--to", "dp1")
        time.sleep(3)
        assert proc.poll() is None and manifests(container) == ["1", "2"]
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "waiting: package resume is being removed" in err
    assert manifests(container) == ["1", "2", "3"] and current(container) == "3"


def test_storage_stopping_mid_upload_fails_cleanly_and_a_rerun_resumes(home, tmp_path):
    package = "outage"
    site = Site.open(home)
    (tmp_path / "v1").write_bytes(b"version one")
    big = random_file(tmp_path / "v2", 64 * MiB)
    cdp_json(home, "distribute", tmp_path / "v1", "--package", package, "--version", "1", "--to", "dp1")
    container = container_of(account(home), package)

    proc = start_cdp(home, "distribute", big, "--package", package, "--version", "2", "--to", "dp1", "--json")
    try:
        wait_for_chunks(container, proc, 4)
        processes.stop(LocalCloud(site).status()["services"]["azurite"]["pid"])
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        LocalCloud(site).start()  # Azurite again, on the same port; the rest kept running

    assert proc.returncode == 1, err
    (line,) = error_lines(err)
    assert line.startswith("error: dp1: ")
    (result,) = json.loads(out)["results"]
    assert result["status"] == "failed" and result["error"] in line
    container = container_of(account(home), package)
    assert current(container) == "1" and manifests(container) == ["1"]
    assert recorded(home, package) == ["1"]
    listed = cdp(home, "content", "list")
    assert listed.returncode == 0 and "outage versions 1" in listed.stdout

    rerun = cdp_json(home, "distribute", big, "--package", package, "--version", "2", "--to", "dp1")
    (result,) = rerun["results"]
    assert result["status"] == "uploaded"
    assert 0 < result["chunks_uploaded"] < result["chunks_total"]
    assert result["bytes_uploaded"] < result["bytes_total"]
    assert current(container) == "2" and recorded(home, package) == ["1", "2"]


# -- many distribution points ------------------------------------------------------------------


def test_many_points_one_failing_and_a_stale_one_redeployed_first(home, tmp_path):
    source = tmp_path / "many"
    random_file(source / "app.bin", 3 * MiB)
    (source / "app.ini").write_text("[app]\n")
    assert cdp(home, "provision", "dp3").returncode == 0
    dp3 = status_of(home, "dp3")
    # dp3's resource group (and storage account) disappears behind the site's back.
    arm.connect(Site.open(home), "local").resources.resource_groups.begin_delete(dp3["resource_group"]).result()

    proc = cdp(home, "distribute", source, "--package", "many", "--version", "1", "--to", "dp1", "dp2", "dp3",
               "--json")
    assert proc.returncode == 1, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert [r["distribution_point"] for r in results] == ["dp1", "dp2", "dp3"]
    assert [r["status"] for r in results] == ["uploaded", "uploaded", "failed"]
    (line,) = error_lines(proc.stderr)
    assert line.startswith("error: dp3: ") and results[2]["error"] in line
    for name in ("dp1", "dp2"):
        assert current(container_of(account(home, name), "many")) == "1"
    assert state_rows(home, "SELECT distribution_point, status FROM placements WHERE package_id = 'many'"
                            " ORDER BY distribution_point") == [
        ("dp1", "uploaded"), ("dp2", "uploaded"), ("dp3", "failed")]
    assert cdp(home, "teardown", "dp3", "--yes").returncode == 0

    again = cdp_json(home, "distribute", source, "--package", "many", "--version", "1", "--to", "dp1",
                     "--to", "dp2")
    assert [(r["distribution_point"], r["bytes_uploaded"]) for r in again["results"]] == [("dp1", 0), ("dp2", 0)]
    listed = cdp_json(home, "content", "list", "--package", "many", "--on", "dp1", "dp2")["content"]
    assert [(r["distribution_point"], r["versions"]) for r in listed] == [("dp1", ["1"]), ("dp2", ["1"])]

    # New templates make both stale: a distribution to the group redeploys them first.
    own = Path(home) / "my-templates"
    shutil.copytree(REPO / "templates", own)
    target = own / "distribution-point.json.j2"
    target.write_text(target.read_text().replace('"requestTracingEnabled": true',
                                                 '"requestTracingEnabled": false'))
    hashes = {name: status_of(home, name)["template_hash"] for name in ("dp1", "dp2")}
    (Path(home) / "cdp.toml").write_text('templates_dir = "my-templates"\n[groups]\npair = ["dp1", "dp2"]\n')
    assert status_of(home, "dp1")["stale"] and status_of(home, "dp2")["stale"]
    (source / "app.ini").write_text("[app]\nversion = 2\n")
    proc = cdp(home, "distribute", source, "--package", "many", "--version", "2", "--group", "pair", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in json.loads(proc.stdout)["results"]] == ["uploaded", "uploaded"]
    for name in ("dp1", "dp2"):
        assert f"{name}: deployment is stale or failed; redeploying first" in proc.stderr
        dp = status_of(home, name)  # deployed with the new templates
        assert dp["template_hash"] != hashes[name] and not dp["stale"] and dp["state"] == "Succeeded"
        assert current(container_of(account(home, name), "many")) == "2"
