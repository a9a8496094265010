"""The local cloud: real Azurite over HTTPS, driven through the CLI and the library.

Every check reads the real thing: bytes read back through azure-storage-blob with the reported
key and CA bundle, processes looked up in /proc, exit codes and stderr lines.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from provisioner.errors import CdpError, UsageError
from provisioner.localcloud import EMULATOR_ACCOUNT, NOT_RUNNING, LocalCloud, certs
from provisioner.site import Site


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and not _gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def _client(doc: dict, name: str = EMULATOR_ACCOUNT) -> BlobServiceClient:
    """A client built only from what `cdp local status --json` reports."""
    account = next(a for a in doc["accounts"] if a["name"] == name)
    return BlobServiceClient(account["blob_endpoint"],
                             credential={"account_name": name, "account_key": account["key"]},
                             connection_verify=doc["ca_bundle"])


def _unique(prefix: str) -> str:
    return prefix + secrets.token_hex(4)


def test_start_stop_start_keeps_data_and_endpoint(run_cdp, cdp_home):
    started = run_cdp("local", "start", "--json")
    assert started.code == 0, started
    try:
        doc = run_cdp("local", "status", "--json").json()
        assert doc == started.json()
        assert doc["running"] is True
        port = doc["services"]["azurite"]["port"]
        assert doc["blob_endpoint"] == f"https://127.0.0.1:{port}/{EMULATOR_ACCOUNT}"
        assert Path(doc["ca_bundle"]).is_file()
        pid = doc["services"]["azurite"]["pid"]

        container = _client(doc).create_container("content")
        blob = container.get_blob_client("hello.txt")
        blob.upload_blob(b"hello from the local cloud")
        assert blob.download_blob().readall() == b"hello from the local cloud"

        again = run_cdp("local", "start", "--json")
        assert again.code == 0, again
        assert again.json()["services"]["azurite"]["pid"] == pid  # a no-op

        stopped = run_cdp("local", "stop", "--json")
        assert stopped.code == 0, stopped
        assert stopped.json() == {"running": False, "stopped": [doc["services"]["management"]["pid"], pid]}
        assert _gone(pid)
        assert _processes_mentioning(str(cdp_home)) == []
        assert run_cdp("local", "status", "--json").json()["running"] is False

        # A stale pid file whose pid now belongs to someone else: not ours, never signalled.
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        try:
            state_path = cdp_home / "local" / "cloud.json"
            state = json.loads(state_path.read_text())
            state["services"]["azurite"]["pid"] = other.pid
            state_path.write_text(json.dumps(state))
            assert run_cdp("local", "status", "--json").json()["running"] is False

            restarted = run_cdp("local", "start", "--json")
            assert restarted.code == 0, restarted
            doc = restarted.json()
            assert doc["services"]["azurite"]["pid"] not in (pid, other.pid)
            assert other.poll() is None  # still alive: not signalled
        finally:
            other.kill()
            other.wait()
        assert doc["services"]["azurite"]["port"] == port  # the recorded endpoint still holds
        blob = _client(doc).get_container_client("content").get_blob_client("hello.txt")
        assert blob.download_blob().readall() == b"hello from the local cloud"
    finally:
        run_cdp("local", "stop")
    assert _processes_mentioning(str(cdp_home)) == []


def test_dead_pid_in_state_file_is_not_running(run_cdp, cdp_home):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    local = cdp_home / "local"
    local.mkdir(parents=True)
    (local / "cloud.json").write_text(json.dumps(
        {"services": {"azurite": {"pid": dead.pid, "port": 1}}}))
    assert run_cdp("local", "status", "--json").json()["running"] is False
    stopped = run_cdp("local", "stop", "--json")
    assert stopped.code == 0, stopped
    assert stopped.json() == {"running": False, "stopped": []}


def test_command_needing_the_cloud_fails_in_one_line_when_stopped(run_cdp, cdp_home):
    added = run_cdp("local", "account", "add", "stoppedacct", "--json")
    assert added.code == 0, added
    assert added.json()["blob_endpoint"] is None
    removed = run_cdp("local", "account", "remove", "stoppedacct", "--yes")
    assert removed.code == 1, removed
    assert removed.stdout == ""
    assert removed.stderr == f"error: {NOT_RUNNING}\n"

    cloud = LocalCloud(Site.open(cdp_home))
    with pytest.raises(CdpError, match="not running"):
        cloud.blob_service_client()


def test_bad_account_name_is_usage_error(run_cdp):
    result = run_cdp("local", "account", "add", "Bad_Name")
    assert result.code == 2, result
    assert result.stderr.count("\n") == 1 and "invalid storage account name" in result.stderr


def test_accounts_are_isolated_and_removal_deletes_data(local_cloud: LocalCloud):
    name_a, name_b = _unique("cdpa"), _unique("cdpb")
    key_a = local_cloud.add_account(name_a)
    key_b = local_cloud.add_account(name_b)
    assert local_cloud.add_account(name_a) == key_a  # idempotent: the key stays
    assert key_a != key_b
    mode = local_cloud.accounts_path.stat().st_mode & 0o777
    assert mode == 0o600

    a = local_cloud.blob_service_client(name_a)
    a.create_container("private")
    a.get_blob_client("private", "secret.bin").upload_blob(b"only for a")

    # Account A's name with account B's key: refused.
    endpoint_a = local_cloud.blob_endpoint(name_a)
    forged = BlobServiceClient(endpoint_a, credential={"account_name": name_a, "account_key": key_b},
                               connection_verify=str(local_cloud.ca_bundle))
    with pytest.raises(HttpResponseError) as refused:
        forged.get_blob_client("private", "secret.bin").download_blob().readall()
    assert refused.value.status_code == 403
    # Account B's own credentials on account A's URL: refused too.
    b_on_a = BlobServiceClient(endpoint_a, credential={"account_name": name_b, "account_key": key_b},
                               connection_verify=str(local_cloud.ca_bundle))
    with pytest.raises(HttpResponseError) as refused:
        list(b_on_a.list_containers())
    assert refused.value.status_code == 403
    # Account B sees none of A's containers.
    assert [c.name for c in local_cloud.blob_service_client(name_b).list_containers()] == []

    assert local_cloud.remove_account(name_a) is True
    assert name_a not in local_cloud.accounts()
    with pytest.raises(HttpResponseError):
        a_gone = BlobServiceClient(endpoint_a, credential={"account_name": name_a, "account_key": key_a},
                                   connection_verify=str(local_cloud.ca_bundle))
        a_gone.get_blob_client("private", "secret.bin").download_blob().readall()
    # A new account of the same name gets a new key and none of the old data.
    assert local_cloud.add_account(name_a) != key_a
    assert [c.name for c in local_cloud.blob_service_client(name_a).list_containers()] == []
    assert local_cloud.remove_account(name_a) is True
    assert local_cloud.remove_account(name_a) is False
    with pytest.raises(UsageError):
        local_cloud.remove_account(EMULATOR_ACCOUNT)


def test_server_certificate_is_4096_bit_v3_for_loopback(local_cloud: LocalCloud):
    paths = local_cloud.cert_paths
    before = paths.server_cert.read_bytes()
    assert certs.ensure(paths.folder) == paths and paths.server_cert.read_bytes() == before
    cert = x509.load_pem_x509_certificate(before)
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.version == x509.Version.v3
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert local_cloud.status()["ca_bundle"] == str(paths.ca_cert)
