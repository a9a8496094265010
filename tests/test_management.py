"""The local management endpoint, driven by the real Azure SDK clients over HTTPS.

Each test uses a subscription of its own on the shared local cloud. The distribution point
test deploys the real rendered templates and checks what they became: a storage account
whose key from ``listKeys`` writes and reads a blob in Azurite, a front-end process
answering ``/health`` over HTTPS, and that deleting the group takes both away.
"""

from __future__ import annotations

import copy
import json
import ssl
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from provisioner import templates, tokens
from provisioner.arm import Connection, LocalCredential
from provisioner.localcloud import EMULATOR_ACCOUNT, LocalCloud, processes
from provisioner.localcloud.azurite import EMULATOR_KEY
from provisioner.names import AzureNames
from provisioner.site import Site

WEB_API = "2024-04-01"
EMPTY_TEMPLATE = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
    "contentVersion": "1.0.0.0",
    "resources": [],
}


@pytest.fixture
def arm(local_cloud: LocalCloud) -> Connection:
    status = local_cloud.status()
    assert status["management_endpoint"].startswith("https://127.0.0.1:")
    return Connection("local", str(uuid.uuid4()), LocalCredential(), status["management_endpoint"],
                      status["ca_bundle"])


def _tls(local_cloud: LocalCloud) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(local_cloud.ca_bundle))


def _health(local_cloud: LocalCloud, host: str) -> dict:
    with urllib.request.urlopen(f"https://{host}/health", context=_tls(local_cloud), timeout=10) as answer:
        assert answer.status == 200
        return json.loads(answer.read())


def _deployment(template: dict, parameters: dict | None = None, **extra) -> dict:
    return {"properties": {"mode": "Incremental", "template": template,
                           "parameters": parameters or {}}, **extra}


def test_resource_group_lifecycle(arm: Connection):
    groups = arm.resources.resource_groups
    group = groups.create_or_update("rg-life", {"location": "westeurope", "tags": {"owner": "me"}})
    assert (group.name, group.location, group.tags) == ("rg-life", "westeurope", {"owner": "me"})
    assert group.id == f"/subscriptions/{arm.subscription_id}/resourceGroups/rg-life"
    assert group.properties.provisioning_state == "Succeeded"

    groups.create_or_update("RG-LIFE", {"location": "westeurope", "tags": {"owner": "you"}})
    assert groups.get("rg-life").tags == {"owner": "you"}  # names are case-insensitive
    assert groups.update("rg-life", {"tags": {"owner": "me"}}).tags == {"owner": "me"}
    assert groups.check_existence("rg-life") is True
    assert [g.name for g in groups.list()] == ["rg-life"]
    assert [g.name for g in groups.list(filter="tagName eq 'owner' and tagValue eq 'nobody'")] == []
    with pytest.raises(ResourceExistsError, match="InvalidResourceGroupLocation"):
        groups.create_or_update("rg-life", {"location": "eastus"})

    groups.begin_delete("rg-life").result()
    assert groups.check_existence("rg-life") is False
    with pytest.raises(ResourceNotFoundError, match="ResourceGroupNotFound"):
        groups.get("rg-life")
    with pytest.raises(ResourceNotFoundError, match="ResourceGroupNotFound"):
        groups.begin_delete("rg-life")


def test_errors_come_in_arm_shape(arm: Connection):
    arm.resources.resource_groups.create_or_update("rg-errors", {"location": "westeurope"})
    scope = f"/subscriptions/{arm.subscription_id}/resourceGroups"
    with pytest.raises(ResourceNotFoundError) as missing:
        arm.resources.resources.get_by_id(f"{scope}/rg-errors/providers/Microsoft.Web/sites/nope", api_version=WEB_API)
    assert missing.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as no_group:
        arm.resources.resources.get_by_id(f"{scope}/nope/providers/Microsoft.Web/sites/nope", api_version=WEB_API)
    assert no_group.value.error.code == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError) as no_deployment:
        arm.deployments.deployments.get("rg-errors", "nope")
    assert no_deployment.value.error.code == "DeploymentNotFound"
    with pytest.raises(ResourceNotFoundError):
        arm.storage.storage_accounts.list_keys("rg-errors", "nope")
    with pytest.raises(ResourceNotFoundError, match="ResourceGroupNotFound"):
        arm.deployments.deployments.begin_create_or_update("nope", "d", _deployment(EMPTY_TEMPLATE))
    with pytest.raises(HttpResponseError, match="LocationRequired"):
        arm.deployments.deployments.begin_create_or_update_at_subscription_scope("d", _deployment(EMPTY_TEMPLATE))


def test_resources_by_id(arm: Connection):
    arm.resources.resource_groups.create_or_update("rg-ids", {"location": "westeurope"})
    template = copy.deepcopy(EMPTY_TEMPLATE)
    template["resources"] = [{"type": "Microsoft.Web/serverfarms", "apiVersion": WEB_API, "name": "plan",
                              "location": "[resourceGroup().location]", "sku": {"name": "B1", "capacity": 3}}]
    arm.deployments.deployments.begin_create_or_update("rg-ids", "plan", _deployment(template)).result()
    plan_id = f"/subscriptions/{arm.subscription_id}/resourceGroups/rg-ids/providers/Microsoft.Web/serverfarms/plan"
    resources = arm.resources.resources
    plan = resources.get_by_id(plan_id, api_version=WEB_API)
    assert (plan.id, plan.location, plan.sku.capacity) == (plan_id, "westeurope", 3)
    assert resources.check_existence_by_id(plan_id, api_version=WEB_API) is True

    resources.begin_delete_by_id(plan_id, api_version=WEB_API).result()
    assert resources.check_existence_by_id(plan_id, api_version=WEB_API) is False
    with pytest.raises(ResourceNotFoundError):
        resources.get_by_id(plan_id, api_version=WEB_API)
    resources.begin_delete_by_id(plan_id, api_version=WEB_API).result()  # gone already: no error


def test_requests_need_a_bearer_token(arm: Connection, local_cloud: LocalCloud):
    url = f"{arm.base_url}/subscriptions/{arm.subscription_id}/resourcegroups?api-version=2025-04-01"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, context=_tls(local_cloud), timeout=10)
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error"]["code"] == "AuthenticationFailed"


def test_unknown_function_fails_the_deployment_and_changes_nothing(arm: Connection):
    arm.resources.resource_groups.create_or_update("rg-bad", {"location": "westeurope"})
    template = copy.deepcopy(EMPTY_TEMPLATE)
    template["resources"] = [{"type": "Microsoft.Web/serverfarms", "apiVersion": WEB_API, "name": "plan",
                              "location": "westeurope", "sku": {"name": "B1", "capacity": 1}}]
    template["outputs"] = {"broken": {"type": "string", "value": "[frobnicate('x')]"}}
    deployments = arm.deployments.deployments

    with pytest.raises(HttpResponseError, match="frobnicate") as invalid:
        deployments.begin_validate("rg-bad", "bad", _deployment(template)).result()
    assert invalid.value.status_code == 400
    with pytest.raises(HttpResponseError, match="frobnicate"):
        deployments.begin_create_or_update("rg-bad", "bad", _deployment(template)).result()
    failed = deployments.get("rg-bad", "bad")
    assert failed.properties.provisioning_state == "Failed"
    assert "frobnicate" in failed.properties.error.message
    with pytest.raises(ResourceNotFoundError):
        arm.resources.resources.get_by_id(
            f"/subscriptions/{arm.subscription_id}/resourceGroups/rg-bad/providers/Microsoft.Web/serverfarms/plan",
            api_version=WEB_API)


def test_distribution_point_deploys_runs_survives_a_restart_and_is_deleted(
        arm: Connection, local_cloud: LocalCloud, tmp_path: Path):
    site = Site.open(tmp_path / "site")
    names = AzureNames.derive("dp1", site.site_id)
    settings = _front_end_settings(site, names, local_cloud)
    rendered = templates.render(site, templates.Spec("dp1", region="westeurope", app_settings=settings))
    deployments = arm.deployments.deployments

    # Subscription scope: the resource group, tagged.
    group_deployment = deployments.begin_create_or_update_at_subscription_scope(
        "dp1-group", {"location": "westeurope", **_deployment(rendered.template("resource-group"),
                                                               rendered.parameters("resource-group"))}).result()
    assert group_deployment.properties.provisioning_state == "Succeeded"
    assert group_deployment.properties.outputs["resourceGroupName"]["value"] == names.resource_group
    assert arm.resources.resource_groups.get(names.resource_group).tags[templates.OWNER_TAG] == site.site_id
    again = deployments.begin_what_if_at_subscription_scope(
        "dp1-group", {"location": "westeurope", **_deployment(rendered.template("resource-group"),
                                                               rendered.parameters("resource-group"))}).result()
    assert [change.change_type for change in again.changes] == ["NoChange"]

    # Group scope: storage, plan, front end.
    body = _deployment(rendered.template("distribution-point"), rendered.parameters("distribution-point"))
    deployed = deployments.begin_create_or_update(names.resource_group, "dp1", body).result()
    assert deployed.properties.provisioning_state == "Succeeded"
    outputs = {key: value["value"] for key, value in deployed.properties.outputs.items()}
    assert outputs["storageAccountName"] == names.storage_account
    assert outputs["instances"] == 2
    host = outputs["serviceHostName"]
    assert _health(local_cloud, host) == {"status": "ok"}

    scope = f"/subscriptions/{arm.subscription_id}/resourceGroups/{names.resource_group}/providers"
    plan = arm.resources.resources.get_by_id(f"{scope}/Microsoft.Web/serverfarms/{names.plan}", api_version=WEB_API)
    assert plan.sku.capacity == 2
    storage = arm.resources.resources.get_by_id(f"{scope}/Microsoft.Storage/storageAccounts/{names.storage_account}",
                                                api_version="2023-05-01")
    assert (storage.sku.name, storage.kind, storage.properties["provisioningState"]) == ("Standard_LRS", "StorageV2",
                                                                                          "Succeeded")
    assert storage.properties["primaryEndpoints"]["blob"] == outputs["blobEndpoint"]

    # Its own account, its own key: listKeys writes and reads; the emulator's key does not.
    key = arm.storage.storage_accounts.list_keys(names.resource_group, names.storage_account).keys_property[0].value
    service = BlobServiceClient(outputs["blobEndpoint"], connection_verify=str(local_cloud.ca_bundle),
                                credential={"account_name": names.storage_account, "account_key": key})
    container = service.create_container("content")
    container.upload_blob("hello.txt", b"hello")
    assert container.download_blob("hello.txt").readall() == b"hello"
    stranger = BlobServiceClient(outputs["blobEndpoint"], connection_verify=str(local_cloud.ca_bundle),
                                 credential={"account_name": EMULATOR_ACCOUNT, "account_key": EMULATOR_KEY})
    with pytest.raises(HttpResponseError):
        stranger.get_container_client("content").download_blob("hello.txt").readall()

    # Validate and what-if: the same inputs change nothing; another instance count modifies the plan.
    assert deployments.begin_validate(names.resource_group, "dp1", body).result().properties.provisioning_state \
        == "Succeeded"
    same = deployments.begin_what_if(names.resource_group, "dp1", body).result()
    assert {change.change_type for change in same.changes} == {"NoChange"}
    scaled = copy.deepcopy(body)
    scaled["properties"]["parameters"]["instances"] = {"value": 3}
    changes = {c.resource_id.rsplit("/", 1)[1]: c for c in
               deployments.begin_what_if(names.resource_group, "dp1", scaled).result().changes}
    assert changes[names.plan].change_type == "Modify"
    assert any(d.path == "sku.capacity" and d.after == 3 for d in changes[names.plan].delta)

    # New app settings: the front end restarts on the same port with them.
    before = _site(arm, scope, names.site).properties["localProcess"]["pid"]
    resettled = copy.deepcopy(body)
    settings["CDP_SAS_TTL_SECONDS"] = "600"
    resettled["properties"]["parameters"]["appSettings"] = {"value": [{"name": k, "value": v}
                                                                      for k, v in settings.items()]}
    redeployed = deployments.begin_create_or_update(names.resource_group, "dp1", resettled).result()
    assert redeployed.properties.outputs["serviceHostName"]["value"] == host
    pid = _site(arm, scope, names.site).properties["localProcess"]["pid"]
    assert pid != before and not processes.alive(before)
    assert b"CDP_SAS_TTL_SECONDS=600\0" in Path(f"/proc/{pid}/environ").read_bytes()

    # The endpoint restarts: its state and the front end come back, on the same port.
    management = local_cloud.status()["services"]["management"]
    processes.stop(management["pid"])
    assert not processes.alive(pid)  # it stopped its front ends
    assert local_cloud.start()["management_endpoint"] == arm.base_url
    assert deployments.get(names.resource_group, "dp1").properties.provisioning_state == "Succeeded"
    assert _health(local_cloud, host) == {"status": "ok"}
    pid = _site(arm, scope, names.site).properties["localProcess"]["pid"]

    # Deleting the group takes everything away.
    arm.resources.resource_groups.begin_delete(names.resource_group).result()
    assert not processes.alive(pid)
    assert names.storage_account not in local_cloud.accounts()
    with pytest.raises(HttpResponseError):
        container.download_blob("hello.txt").readall()
    with pytest.raises(ResourceNotFoundError):
        deployments.get(names.resource_group, "dp1")
    assert deployments.get_at_subscription_scope("dp1-group").properties.provisioning_state == "Succeeded"


def _front_end_settings(site: Site, names: AzureNames, local_cloud: LocalCloud) -> dict[str, str]:
    """The app settings the front end needs to start (:mod:`provisioner.frontend.settings`).

    Its storage key (the local stand-in for a managed identity) exists before the deployment
    here: the account is added first, and the deployment keeps an existing account's key.
    """
    key = local_cloud.add_account(names.storage_account)
    azurite_port = local_cloud.status()["services"]["azurite"]["port"]
    return {"CDP_DISTRIBUTION_POINT": "dp1", "CDP_SITE_ID": site.site_id,
            "CDP_TOKEN_PUBLIC_KEY": tokens.public_key_pem(site),
            "CDP_STORAGE_ACCOUNT": names.storage_account,
            "CDP_BLOB_ENDPOINT": f"https://127.0.0.1:{azurite_port}/{names.storage_account}/",
            "CDP_CA_BUNDLE": str(local_cloud.ca_bundle), "CDP_STORAGE_KEY": key}


def _site(arm: Connection, scope: str, name: str):
    return arm.resources.resources.get_by_id(f"{scope}/Microsoft.Web/sites/{name}", api_version=WEB_API)
