"""Egress: the front end counts what it hands out, `cdp status` shows it live against the
monthly threshold (alerts at 50 % and 90 %), and a hard cap makes the front end refuse; a
client that holds an older version is counted only the chunks it lacks."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from helpers import cdp, local_site


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with local_site(tmp_path_factory, "egress") as home:
        yield home

def egress(home) -> dict:
    proc = cdp(home, "status", "dp1", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["distribution_points"][0]["egress"]


def wait_for_egress(home, at_least: int) -> dict:
    deadline = time.monotonic() + 20  # the front end flushes its counter every ~2 s
    while True:
        found = egress(home)
        if found["bytes"] >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_egress_alerts_then_hard_cap(home, tmp_path):
    assert cdp(home, "provision", "dp1").returncode == 0
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "payload.bin").write_bytes(os.urandom(300_000))
    assert cdp(home, "distribute", package, "--package", "app", "--version", "1",
               "--to", "dp1").returncode == 0
    before = egress(home)
    assert before["bytes"] == 0 and before["alert"] is None
    assert before["threshold_bytes"] == 10_000 * 1000**3  # Configuration Manager's default

    # A threshold of 1 MB: one fetch (about 0.3 MB) is not yet 50 %, two are, four pass 90 %.
    (home / "cdp.toml").write_text("[alerts]\negress_threshold_gb = 0.001\n")
    bundle = tmp_path / "client.json"
    assert cdp(home, "token", "issue", "--client", "pc1", "--out", bundle).returncode == 0
    sizes = []
    for n in range(4):
        fetched = cdp(home, "fetch", "--access", bundle, "--package", "app", "--dest", tmp_path / f"d{n}",
                      "--json")
        assert fetched.returncode == 0, fetched.stderr
        counted = wait_for_egress(home, (n + 1) * 300_000)
        sizes.append((counted["percent"], counted["alert"]))
    assert sizes[0][1] is None
    assert sizes[1][1] == "warning" and 50 <= sizes[1][0] < 90
    assert sizes[3][1] == "critical" and sizes[3][0] >= 90
    human = cdp(home, "status", "dp1").stdout
    assert "ALERT critical" in human and "monthly threshold" in human

    # A hard cap below what was handed out: after the front end picks it up, it refuses.
    (home / "cdp.toml").write_text("[alerts]\negress_threshold_gb = 0.001\negress_hard_cap_gb = 0.001\n")
    applied = cdp(home, "provision", "dp1")  # the cap is an app setting of the front end
    assert applied.returncode == 0, applied.stderr
    assert egress(home)["hard_cap_bytes"] == 1_000_000
    refused = cdp(home, "fetch", "--access", bundle, "--package", "app", "--dest", tmp_path / "late")
    assert refused.returncode == 1
    assert "egress cap" in refused.stderr
    assert not (tmp_path / "late").exists()


def test_an_update_is_counted_as_what_the_client_downloads(home, tmp_path):
    (home / "cdp.toml").write_text("")  # no hard cap any more
    assert cdp(home, "provision", "dp1").returncode == 0
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(hashlib.shake_256(b"a").digest(8_000_000))  # fixed bytes: fixed chunks
    (src / "b.bin").write_bytes(hashlib.shake_256(b"b").digest(1_000_000))
    bundle = tmp_path / "client.json"
    dest = tmp_path / "dest"
    counted = []
    for version in ("1", "2"):
        if version == "2":
            (src / "b.bin").write_bytes(hashlib.shake_256(b"b2").digest(300_000))  # a.bin stays
        assert cdp(home, "distribute", src, "--package", "upd", "--version", version,
                   "--to", "dp1").returncode == 0
        assert cdp(home, "token", "issue", "--client", "pc2", "--package", "upd", "--out", bundle).returncode == 0
        before = egress(home)["bytes"]
        fetched = cdp(home, "fetch", "--access", bundle, "--package", "upd", "--dest", dest, "--json")
        assert fetched.returncode == 0, fetched.stderr
        downloaded = json.loads(fetched.stdout)["bytes_downloaded"]
        counted.append((wait_for_egress(home, before + downloaded)["bytes"] - before, downloaded))
    assert counted[0][0] == counted[0][1] > 9_000_000  # all of version 1
    # Version 2 with the destination holding version 1: the manifest, the new b.bin and the end
    # of a.bin in its chunk (about 0.33 MB), exactly what the client downloaded, not 8.3 MB.
    assert counted[1][0] == counted[1][1] < 1_000_000
