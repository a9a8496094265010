"""The CDP front end, for real: uvicorn over HTTPS in a subprocess, against Azurite.

Content is put in place by writing blobs in the layout directly (a ``current`` pointer,
manifests, a chunk); the front end never decrypts, so the bytes need not be real ciphertext.
Two front ends share one storage account: ``main`` (SAS valid an hour) and ``capped`` (SAS
valid 2 s, an egress hard cap). A third runs from the app package zip alone.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from provisioner import tokens
from provisioner.content import layout
from provisioner.frontend import control
from provisioner.frontend.package import build_app_package
from provisioner.site import Site

DP = "dp-front"
PACKAGE = "app.one"
OTHER = "app.two"
BIG = "app.big"
PACK = layout.pack_blob("ab" * 16)
CHUNK_BYTES = b"c" * 700  # a pack of stored chunks, as far as the front end can tell
MANIFEST_1 = b"m" * 100
MANIFEST_2 = b"n" * 50
BIG_BYTES = 400_000
CAP = 1_000_000
START_TIMEOUT = 30


@dataclass
class Storage:
    account: str
    key: str
    endpoint: str
    service: object


@dataclass
class FrontEnd:
    proc: subprocess.Popen
    port: int
    log: Path
    instance: str


@pytest.fixture(scope="module")
def storage(local_cloud) -> Storage:
    account = "fe" + secrets.token_hex(5)
    key = local_cloud.add_account(account)
    service = local_cloud.blob_service_client(account)

    def put(package: str, name: str, data: bytes, metadata: dict | None = None) -> None:
        container = service.get_container_client(layout.container_name(package))
        if not container.exists():
            container.create_container()
        container.upload_blob(name, data, overwrite=True, metadata=metadata)

    put(PACKAGE, PACK, CHUNK_BYTES)
    put(PACKAGE, layout.manifest_blob("1.0"), MANIFEST_1, {"stored_bytes": "1000"})
    put(PACKAGE, layout.manifest_blob("2.0"), MANIFEST_2)  # no metadata: the packs are summed
    put(PACKAGE, layout.CURRENT_BLOB, layout.current_pointer("1.0"))
    put(OTHER, PACK, b"secret of another package")
    put(OTHER, layout.manifest_blob("1.0"), MANIFEST_1, {"stored_bytes": "700"})
    put(BIG, layout.manifest_blob("1.0"), b"x", {"stored_bytes": str(BIG_BYTES - 1)})
    put(BIG, layout.CURRENT_BLOB, layout.current_pointer("1.0"))
    return Storage(account, key, local_cloud.blob_endpoint(account), service)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    return Site.open(tmp_path_factory.mktemp("frontend-site") / "cdp-home")


def settings_env(local_cloud, storage: Storage, site: Site, instance: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_")}
    env.update({
        "CDP_DISTRIBUTION_POINT": DP,
        "CDP_SITE_ID": site.site_id,
        "CDP_TOKEN_PUBLIC_KEY": tokens.public_key_pem(site),
        "CDP_STORAGE_ACCOUNT": storage.account,
        "CDP_BLOB_ENDPOINT": storage.endpoint,
        "CDP_STORAGE_KEY": storage.key,
        "CDP_CA_BUNDLE": str(local_cloud.ca_bundle),
        "WEBSITE_INSTANCE_ID": instance,
    })
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_front_end(local_cloud, env: dict[str, str], folder: Path) -> FrontEnd:
    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / "frontend.log"
    certs = local_cloud.cert_paths
    argv = [sys.executable, "-m", "provisioner.frontend", "--host", "127.0.0.1", "--port", str(port),
            "--cert", str(certs.server_cert), "--key", str(certs.server_key), "--data-dir", str(folder / "data")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    front = FrontEnd(proc, port, log, env["WEBSITE_INSTANCE_ID"])
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"front end exited {proc.returncode}:\n{log.read_text()}")
        try:
            if request(local_cloud, front, "/health")[0] == 200:
                return front
        except OSError:
            time.sleep(0.1)
    stop_front_end(front)
    pytest.fail(f"front end did not answer /health:\n{log.read_text()}")


def stop_front_end(front: FrontEnd) -> None:
    front.proc.terminate()
    try:
        front.proc.wait(15)
    except subprocess.TimeoutExpired:
        front.proc.kill()
        front.proc.wait()


def request(local_cloud, front: FrontEnd, path: str, token: str | None = None,
            authorization: str | None = None) -> tuple[int, dict]:
    context = ssl.create_default_context(cafile=str(local_cloud.ca_bundle))
    conn = http.client.HTTPSConnection("127.0.0.1", front.port, context=context, timeout=15)
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def wait_for(check, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def main(local_cloud, storage, site, tmp_path_factory):
    env = settings_env(local_cloud, storage, site, "main-" + secrets.token_hex(3))
    front = start_front_end(local_cloud, env, tmp_path_factory.mktemp("fe-main"))
    yield front
    stop_front_end(front)


@pytest.fixture(scope="module")
def capped(local_cloud, storage, site, tmp_path_factory):
    env = settings_env(local_cloud, storage, site, "capped-" + secrets.token_hex(3),
                       CDP_SAS_TTL_SECONDS="2", CDP_EGRESS_HARD_CAP_BYTES=str(CAP))
    front = start_front_end(local_cloud, env, tmp_path_factory.mktemp("fe-capped"))
    yield front
    stop_front_end(front)


@pytest.fixture(scope="module")
def token(site) -> str:
    return tokens.issue(site, "client-1", [DP], [PACKAGE, OTHER, BIG, "no.such"])


def sas_container(local_cloud, answer: dict) -> ContainerClient:
    return ContainerClient.from_container_url(f"{answer['container_url']}?{answer['sas']}",
                                              connection_verify=str(local_cloud.ca_bundle), retry_total=0)


# -- the tests -----------------------------------------------------------------------------------


def test_health_and_state(local_cloud, main):
    assert request(local_cloud, main, "/health") == (200, {"status": "ok"})
    assert request(local_cloud, main, "/v1/state") == (200, {"serving": True})


def test_tokens_that_are_missing_malformed_tampered_expired_or_foreign_get_401(local_cloud, main, site, token,
                                                                                 tmp_path):
    path = f"/v1/locations/{PACKAGE}"
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["cdps"] = [DP, "dp-elsewhere"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    expired = tokens.issue(site, "client-1", [DP], [PACKAGE], ttl=10, now=time.time() - 60)
    foreign = tokens.issue(Site.open(tmp_path / "other-site"), "client-1", [DP], [PACKAGE])
    cases = {
        "missing": request(local_cloud, main, path),
        "malformed": request(local_cloud, main, path, "not-a-token"),
        "not bearer": request(local_cloud, main, path, authorization=f"Basic {token}"),
        "tampered": request(local_cloud, main, path, f"{header}.{forged}.{signature}"),
        "expired": request(local_cloud, main, path, expired),
        "other site": request(local_cloud, main, path, foreign),
    }
    for case, (status, body) in cases.items():
        assert status == 401, (case, body)
        assert body["error"] and token not in body["error"], case
    assert "expired" in cases["expired"][1]["error"]


def test_tokens_for_another_distribution_point_or_package_get_403(local_cloud, main, site):
    other_dp = tokens.issue(site, "client-1", ["dp-elsewhere"], [PACKAGE])
    other_pkg = tokens.issue(site, "client-1", [DP], [OTHER])
    status, body = request(local_cloud, main, f"/v1/locations/{PACKAGE}", other_dp)
    assert status == 403 and DP in body["error"]
    status, body = request(local_cloud, main, f"/v1/locations/{PACKAGE}", other_pkg)
    assert status == 403 and PACKAGE in body["error"]


def test_unknown_package_or_version_gets_404(local_cloud, main, token):
    assert request(local_cloud, main, "/v1/locations/no.such", token)[0] == 404
    assert request(local_cloud, main, f"/v1/locations/{PACKAGE}/9.9", token)[0] == 404
    assert request(local_cloud, main, f"/v1/locations/{PACKAGE}/..%2F1.0", token)[0] == 404


def test_location_resolves_current_and_an_explicit_version(local_cloud, main, storage, token):
    status, answer = request(local_cloud, main, f"/v1/locations/{PACKAGE}", token)
    assert status == 200, answer
    container = layout.container_name(PACKAGE)
    assert answer["distribution_point"] == DP and answer["package"] == PACKAGE
    assert answer["version"] == "1.0" and answer["manifest"] == "manifests/1.0"
    assert answer["container_url"] == f"{storage.endpoint}/{container}"
    assert answer["bytes"] == 1000 + len(MANIFEST_1)  # the manifest's stored_bytes + the manifest
    assert "sp=r&" in answer["sas"] and "spr=https" in answer["sas"] and answer["expires_at"].endswith("Z")
    status, answer = request(local_cloud, main, f"/v1/locations/{PACKAGE}/2.0", token)
    assert status == 200 and answer["version"] == "2.0" and answer["manifest"] == "manifests/2.0"
    assert answer["bytes"] == len(CHUNK_BYTES) + len(MANIFEST_2)  # no metadata: packs listed


def test_a_new_or_removed_version_is_answered_once_visible_after_has_passed(local_cloud, main, storage, site):
    moving = "app.moving"
    container = storage.service.get_container_client(layout.container_name(moving))
    container.create_container()
    for version in ("1.0", "2.0"):
        container.upload_blob(layout.manifest_blob(version), MANIFEST_1, metadata={"stored_bytes": "1"})
    container.upload_blob(layout.CURRENT_BLOB, layout.current_pointer("1.0"))
    token = tokens.issue(site, "client-moving", [DP], [moving])
    for _ in range(3):  # cached now, and asked again while cached
        assert request(local_cloud, main, f"/v1/locations/{moving}", token)[1]["version"] == "1.0"
    container.upload_blob(layout.CURRENT_BLOB, layout.current_pointer("2.0"), overwrite=True)
    time.sleep(layout.VISIBLE_AFTER)  # what distribute waits after its last write
    for _ in range(3):
        assert request(local_cloud, main, f"/v1/locations/{moving}", token)[1]["version"] == "2.0"
    assert request(local_cloud, main, f"/v1/locations/{moving}/1.0", token)[0] == 200
    container.delete_blob(layout.manifest_blob("1.0"))  # as content remove does
    time.sleep(layout.VISIBLE_AFTER)
    assert request(local_cloud, main, f"/v1/locations/{moving}/1.0", token)[0] == 404


def test_a_client_holding_a_version_is_counted_only_the_chunks_it_lacks(local_cloud, main, storage, site):
    delta = "app.delta"
    container = storage.service.get_container_client(layout.container_name(delta))
    container.create_container()
    a, b, c = ("a" * 64, 100), ("b" * 64, 200), ("c" * 64, 300)
    for version, chunks in (("1.0", dict([a, b])), ("2.0", dict([a, c])), ("3.0", dict([a, b, c]))):
        container.upload_blob(layout.manifest_blob(version), MANIFEST_2,
                              metadata={"stored_bytes": str(sum(chunks.values()))})
        if version != "3.0":  # 3.0 as uploaded before chunk lists
            container.upload_blob(layout.chunk_list_blob(version), layout.chunk_list(chunks))
    container.upload_blob(layout.CURRENT_BLOB, layout.current_pointer("2.0"))
    token = tokens.issue(site, "client-delta", [DP], [delta])

    def counted(path: str) -> int:
        status, answer = request(local_cloud, main, path, token)
        assert status == 200, answer
        return answer["bytes"] - len(MANIFEST_2)

    assert counted(f"/v1/locations/{delta}") == 400  # holds nothing: a and c
    assert counted(f"/v1/locations/{delta}?have=1.0") == 300  # holds a (and b): c
    assert counted(f"/v1/locations/{delta}/2.0?have=2.0") == 0  # holds it all: the manifest
    assert counted(f"/v1/locations/{delta}/1.0?have=2.0") == 200
    for unknown in ("9.9", "3.0", "..%2F1.0"):  # no chunk list to compare with: all of it
        assert counted(f"/v1/locations/{delta}?have={unknown}") == 400
    assert counted(f"/v1/locations/{delta}/3.0?have=1.0") == 600


def test_the_sas_reads_that_container_only(local_cloud, main, token):
    status, answer = request(local_cloud, main, f"/v1/locations/{PACKAGE}", token)
    assert status == 200
    container = sas_container(local_cloud, answer)
    assert container.download_blob(PACK).readall() == CHUNK_BYTES
    assert container.download_blob(answer["manifest"]).readall() == MANIFEST_1
    for attempt in (lambda: container.upload_blob("packs/evil", b"x", overwrite=True),
                    lambda: container.delete_blob(PACK),
                    lambda: list(container.list_blob_names())):
        with pytest.raises(HttpResponseError) as refused:
            attempt()
        assert refused.value.status_code == 403
    other = answer | {"container_url": answer["container_url"].replace(
        layout.container_name(PACKAGE), layout.container_name(OTHER))}
    with pytest.raises(HttpResponseError) as refused:
        sas_container(local_cloud, other).download_blob(PACK).readall()
    assert refused.value.status_code == 403


def test_the_sas_stops_working_after_it_expires(local_cloud, capped, token):
    status, answer = request(local_cloud, capped, f"/v1/locations/{PACKAGE}", token)
    assert status == 200, answer
    container = sas_container(local_cloud, answer)
    assert container.download_blob(PACK).readall() == CHUNK_BYTES
    time.sleep(3.5)  # a 2 s SAS, signed within the last second
    with pytest.raises(HttpResponseError) as refused:
        container.download_blob(PACK).readall()
    assert refused.value.status_code == 403


def test_stop_answers_503_and_start_restores(local_cloud, main, storage, token):
    path = f"/v1/locations/{PACKAGE}"
    try:
        control.set_serving(storage.service, False)
        assert not control.read_serving(storage.service)
        wait_for(lambda: request(local_cloud, main, path, token) == (503, {"error": "stopped"}), "503 stopped")
        assert request(local_cloud, main, "/v1/state") == (200, {"serving": False})
        assert request(local_cloud, main, "/health")[0] == 200
    finally:
        control.set_serving(storage.service, True)
    wait_for(lambda: request(local_cloud, main, path, token)[0] == 200, "200 after start")
    assert request(local_cloud, main, "/v1/state") == (200, {"serving": True})


def test_egress_is_counted_and_written_to_storage(local_cloud, main, storage, token):
    month = control.month_of()

    def written() -> int:
        return control.read_egress(storage.service, month).get(main.instance, 0)

    before = wait_for(lambda: written() or None, "a first egress record")  # earlier tests fetched
    for _ in range(3):
        assert request(local_cloud, main, f"/v1/locations/{PACKAGE}/1.0", token)[0] == 200
    grown = wait_for(lambda: written() >= before + 3 * (1000 + len(MANIFEST_1)), "the egress record to grow")
    assert grown
    records = control.read_egress_records(storage.service, month)
    assert records[main.instance][1] >= 3


def test_the_hard_cap_refuses_with_the_reason(local_cloud, capped, token):
    answers = [request(local_cloud, capped, f"/v1/locations/{BIG}", token) for _ in range(4)]
    # Each location of BIG counts 400,000 bytes against a cap of 1,000,000 (plus what the
    # other front end on this account handed out, far less): the fourth is refused at the latest.
    assert answers[0][0] == 200
    month = control.month_of()
    assert (503, {"error": f"egress cap of {CAP} bytes for {month} reached"}) in answers
    assert request(local_cloud, capped, "/health")[0] == 200


def test_the_logs_hold_no_token_or_sas_signature(main, capped, token):
    for front in (main, capped):
        text = front.log.read_text()
        assert "started" in text  # the log was written at all
        assert token not in text and token.split(".")[2] not in text
        assert "sig=" not in text and "eyJ" not in text


def test_a_missing_setting_stops_the_front_end_with_one_line(local_cloud, storage, site, tmp_path):
    env = settings_env(local_cloud, storage, site, "broken")
    del env["CDP_BLOB_ENDPOINT"]
    certs = local_cloud.cert_paths
    proc = subprocess.run([sys.executable, "-m", "provisioner.frontend", "--port", str(free_port()),
                           "--cert", str(certs.server_cert), "--key", str(certs.server_key)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "front end: app settings: CDP_BLOB_ENDPOINT: missing; the front end cannot start without it"]


def test_the_app_package_runs_alone(local_cloud, storage, site, tmp_path):
    first = build_app_package(tmp_path / "one" / "app.zip")
    second = build_app_package(tmp_path / "two" / "app.zip")
    assert first.read_bytes() == second.read_bytes()  # deterministic: a stable hash
    names = zipfile.ZipFile(first).namelist()
    assert {"requirements.txt", "startup.sh", "provisioner/frontend/app.py", "provisioner/tokens.py",
            "provisioner/content/layout.py"} <= set(names)
    assert not any(name.startswith(("provisioner/cli/", "provisioner/localcloud/")) for name in names)
    env = settings_env(local_cloud, storage, site, "zip-" + secrets.token_hex(3), PYTHONPATH=str(first))
    front = start_front_end(local_cloud, env, tmp_path / "run")  # cwd outside the repo
    try:
        assert request(local_cloud, front, "/health") == (200, {"status": "ok"})
        probe = subprocess.run([sys.executable, "-c", "import provisioner.frontend.app as m; print(m.__file__)"],
                               env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
        assert probe.stdout.strip().startswith(str(first))
    finally:
        stop_front_end(front)


# -- pure parts ----------------------------------------------------------------------------------


def test_redaction_removes_sas_signatures_tokens_and_keys():
    from provisioner.redaction import redact

    token = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjIn0.c2lnbmF0dXJl"
    text = redact(f"GET https://a/b?sp=r&sig=abc%3D&se=1 Authorization: Bearer {token} AccountKey=k3y==; {token}")
    assert "abc%3D" not in text and token not in text and "k3y" not in text
    assert "sig=***" in text and "Bearer ***" in text


def test_the_egress_month_follows_the_utc_calendar():
    from datetime import datetime, timezone

    now = [datetime(2025, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()]
    meter = control.EgressMeter(None, "i", cap=100, clock=lambda: now[0])
    meter.add(60)
    assert meter.this_month() == "2025-12" and meter.refusal() is None
    meter.add(50)
    assert meter.refusal() == "egress cap of 100 bytes for 2025-12 reached"
    now[0] += 1  # a new month starts from zero
    assert meter.this_month() == "2026-01" and meter.refusal() is None and meter.total() == 0


def test_the_cache_shares_loads_refreshes_ahead_and_never_answers_a_read_older_than_its_ttl():
    import asyncio

    from provisioner.frontend.locations import TtlCache

    clock, loads, slow = [0.0], [], [0.0]

    async def loader(key):
        loads.append(clock[0])
        await asyncio.sleep(0.01)
        clock[0] += slow[0]  # how long storage took to answer
        return f"{key}@{loads[-1]}"

    async def scenario():
        cache = TtlCache(loader, 1.0, clock=lambda: clock[0])
        assert await asyncio.gather(*(cache.get("k") for _ in range(10))) == ["k@0.0"] * 10
        assert loads == [0.0]  # ten callers, one load
        clock[0] = 0.4
        assert await cache.get("k") == "k@0.0" and loads == [0.0]
        clock[0] = 0.6  # in the second half of the ttl: answered at once, read again behind it
        assert await asyncio.gather(cache.get("k"), cache.get("k")) == ["k@0.0"] * 2
        await asyncio.sleep(0.05)
        assert loads == [0.0, 0.6] and await cache.get("k") == "k@0.6"
        clock[0], slow[0] = 10.0, 0.9  # expired: wait for a new read, which takes 0.9 s
        assert await cache.get("k") == "k@10.0" and clock[0] == 10.9
        clock[0], slow[0] = 11.0, 0.0  # a ttl after that read began, however late it answered
        assert await cache.get("k") == "k@11.0"
        assert loads == [0.0, 0.6, 10.0, 11.0] and len(cache) == 1

    asyncio.run(scenario())


def test_bad_settings_are_named():
    from provisioner.errors import ConfigError
    from provisioner.frontend.settings import Settings

    good = {"CDP_DISTRIBUTION_POINT": "dp", "CDP_SITE_ID": "s", "CDP_STORAGE_ACCOUNT": "acct1",
            "CDP_BLOB_ENDPOINT": "https://acct1.blob.core.windows.net", "CDP_TOKEN_PUBLIC_KEY": "x"}
    with pytest.raises(ConfigError, match="CDP_TOKEN_PUBLIC_KEY: the token public key is not"):
        Settings.from_env(good)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    settings = Settings.from_env(good | {"CDP_TOKEN_PUBLIC_KEY": pem})
    assert settings.blob_endpoint == "https://acct1.blob.core.windows.net/" and settings.sas_ttl == 3600
    assert not settings.uses_account_key
    assert "s3cret" not in repr(Settings.from_env(good | {"CDP_TOKEN_PUBLIC_KEY": pem, "CDP_STORAGE_KEY": "s3cret"}))
    for key, value, message in [("CDP_BLOB_ENDPOINT", "http://x/", "not an https://"),
                                ("CDP_SAS_TTL_SECONDS", "0", "not a whole number"),
                                ("CDP_EGRESS_HARD_CAP_BYTES", "lots", "not a whole number"),
                                ("CDP_STORAGE_ACCOUNT", "Bad_Name", "not a storage account name")]:
        with pytest.raises(ConfigError, match=f"{key}: .*{message}"):
            Settings.from_env(good | {"CDP_TOKEN_PUBLIC_KEY": pem, key: value})
