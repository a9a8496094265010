"""Provision, what-if, scale, redeploy and teardown through the real CLI, the real Azure SDK
clients and the local management endpoint over HTTPS."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from provisioner import arm, templates
from provisioner.localcloud import LocalCloud
from provisioner.site import Site

from helpers import cdp, local_site

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with local_site(tmp_path_factory, "deploy") as home:
        yield home

def status_of(home, name):
    proc = cdp(home, "status", name, "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    return json.loads(proc.stdout)["distribution_points"][0]


def one_line(stderr: str) -> str:
    """The one error line (progress lines may come before it); no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


def health(url: str, ca_bundle: str) -> int:
    context = ssl.create_default_context(cafile=ca_bundle)
    with urllib.request.urlopen(f"{url}/health", context=context, timeout=10) as response:
        return response.status


def connection(home) -> arm.Connection:
    return arm.connect(Site.open(home), "local")


def test_provision_status_and_health(home):
    proc = cdp(home, "provision", "dp1", "--json")
    assert proc.returncode == 0, proc.stderr
    dp = status_of(home, "dp1")
    assert dp["state"] == "Succeeded" and dp["instances"] == 2
    assert dp["storage_sku"] == "Standard_LRS" and not dp["stale"]
    assert dp["service_url"].startswith("https://")
    assert health(dp["service_url"], str(LocalCloud(Site.open(home)).ca_bundle)) == 200
    # The front end runs from the toolkit's run-from-package zip, as the web app would on Azure.
    pids = [line.split()[0] for line in subprocess.run(
        ["pgrep", "-af", "provisioner.frontend"], capture_output=True, text=True).stdout.splitlines()
        if str(home) in line]
    assert pids
    environ = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
    package = [e for e in environ if e.startswith(b"PYTHONPATH=")][0].split(b"=", 1)[1].decode()
    assert Path(package).name.startswith("frontend-") and Path(package).suffix == ".zip"
    # The deployment is visible through the SDK as Azure would show it.
    deployment = connection(home).deployments.deployments.get(dp["resource_group"], "cdp-dp1")
    assert deployment.properties.provisioning_state == "Succeeded"
    assert set(deployment.properties.outputs) >= {"serviceHostName", "blobEndpoint"}


def test_provision_again_changes_nothing(home):
    what_if = cdp(home, "provision", "dp1", "--what-if", "--json")
    assert what_if.returncode == 0, what_if.stderr
    import json

    assert json.loads(what_if.stdout)["changes"] == []
    again = cdp(home, "provision", "dp1")
    assert again.returncode == 0 and "no changes" in again.stdout
    planned = json.loads(cdp(home, "provision", "dp1", "--instances", "5", "--what-if", "--json").stdout)
    assert {"action": "update", "parameter": "instances", "from": 2, "to": 5} in planned["changes"]
    assert status_of(home, "dp1")["instances"] == 2  # what-if deployed nothing


def test_scale_survives_a_template_update(home, tmp_path):
    assert cdp(home, "scale", "dp1", "--instances", "3").returncode == 0
    plan = connection(home).resources.resources.get_by_id(
        f"/subscriptions/{arm.LOCAL_SUBSCRIPTION}/resourceGroups/cdp-dp1-rg/providers/"
        f"Microsoft.Web/serverfarms/cdp-dp1-plan", api_version="2024-04-01")
    assert plan.sku.capacity == 3
    own = home / "my-templates"
    shutil.copytree(REPO / "templates", own)
    target = own / "distribution-point.json.j2"
    target.write_text(target.read_text().replace('"requestTracingEnabled": true',
                                                 '"requestTracingEnabled": false'))
    (home / "cdp.toml").write_text('templates_dir = "my-templates"\n')
    dp = status_of(home, "dp1")
    assert dp["stale"] is True and dp["instances"] == 3
    redeploy = cdp(home, "redeploy", "dp1", "--json")
    assert redeploy.returncode == 0, redeploy.stderr
    dp = status_of(home, "dp1")
    assert dp["stale"] is False and dp["instances"] == 3
    assert dp["template_hash"] == templates.render_templates(own).template_hash
    (home / "cdp.toml").unlink()
    assert status_of(home, "dp1")["stale"] is True  # back on the toolkit's own templates
    assert cdp(home, "redeploy", "dp1").returncode == 0


def test_failed_deployment_is_recorded_and_recovered(home):
    broken = home / "broken-templates"
    shutil.copytree(REPO / "templates", broken)
    target = broken / "distribution-point.json.j2"
    target.write_text(target.read_text().replace("[parameters('planName')]",
                                                 "[nosuchfunction(parameters('planName'))]", 1))
    (home / "cdp.toml").write_text('templates_dir = "broken-templates"\n')
    failed = cdp(home, "provision", "dp2")
    assert failed.returncode == 1
    assert "nosuchfunction" in one_line(failed.stderr)
    dp = status_of(home, "dp2")
    assert dp["state"] == "Failed" and "nosuchfunction" in dp["error"]
    (home / "cdp.toml").unlink()
    recovered = cdp(home, "provision", "dp2")
    assert recovered.returncode == 0, recovered.stderr
    assert status_of(home, "dp2")["state"] == "Succeeded"


def test_resource_group_without_our_tag_is_never_deleted(home):
    conn = connection(home)
    groups = conn.resources.resource_groups
    group = groups.get("cdp-dp2-rg")
    groups.create_or_update("cdp-dp2-rg", {"location": group.location, "tags": {"owner": "someone-else"}})
    refused = cdp(home, "teardown", "dp2", "--yes")
    assert refused.returncode == 1
    assert "ownership tag" in one_line(refused.stderr)
    assert groups.check_existence("cdp-dp2-rg")
    assert status_of(home, "dp2")["name"] == "dp2"
    # Provisioning over a group that is not ours is refused too.
    assert cdp(home, "provision", "dp2").returncode == 1
    # Hand it back (as an administrator would, after checking) and clean up.
    groups.create_or_update("cdp-dp2-rg", {"location": group.location, "tags": group.tags})
    assert cdp(home, "teardown", "dp2", "--yes").returncode == 0


def test_teardown_removes_everything(home):
    site = Site.open(home)
    cloud = LocalCloud(site)
    dp = status_of(home, "dp1")
    key = cloud.account_key(dp["storage_account"])
    service = cloud.blob_service_client(dp["storage_account"])
    service.create_container("probe")
    pids = [int(line.split()[0]) for line in subprocess.run(
        ["pgrep", "-af", "provisioner.frontend"], capture_output=True, text=True).stdout.splitlines()
        if str(home) in line]
    assert pids
    asked = cdp(home, "teardown", "dp1")  # no --yes and no answer: nothing is deleted
    assert asked.returncode == 1 and status_of(home, "dp1")["state"] == "Succeeded"
    done = cdp(home, "teardown", "dp1", "--yes")
    assert done.returncode == 0, done.stderr
    from azure.storage.blob import BlobServiceClient

    stale_client = BlobServiceClient(
        dp["blob_endpoint"], credential={"account_name": dp["storage_account"], "account_key": key},
        connection_verify=str(cloud.ca_bundle), retry_total=0)
    with pytest.raises(HttpResponseError):
        list(stale_client.list_containers())
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    listing = cdp(home, "status", "--json")
    assert "dp1" not in listing.stdout
    again = cdp(home, "teardown", "dp1", "--yes")
    assert again.returncode == 2
    assert "unknown distribution point" in one_line(again.stderr)


def test_azure_target_without_subscription_or_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    home = tmp_path / "azure-home"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "provisioner", "provision", "dp1", "--target", "azure"],
                          env={**env, "CDP_HOME": str(home)}, input="", capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert "subscription" in one_line(proc.stderr) and "Traceback" not in proc.stderr
    # With a subscription but no credentials (developer credentials only: no metadata endpoint).
    proc = subprocess.run([sys.executable, "-m", "provisioner", "provision", "dp1", "--target", "azure"],
                          env={**env, "CDP_HOME": str(home),
                               "AZURE_SUBSCRIPTION_ID": "11111111-1111-1111-1111-111111111111",
                               "AZURE_TOKEN_CREDENTIALS": "dev"},
                          input="", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "credentials" in one_line(proc.stderr)
    assert time.monotonic() - started < 30
    assert "dp1" not in subprocess.run([sys.executable, "-m", "provisioner", "status", "--json"],
                                       env={**env, "CDP_HOME": str(home)}, capture_output=True,
                                       text=True).stdout
