"""The resource provider of the local cloud: what each resource type becomes on this machine.

========================================  ===================================================
``Microsoft.Resources/resourceGroups``    a resource group of the endpoint, with its tags
``Microsoft.Storage/storageAccounts``     its own Azurite account with its own key
``Microsoft.Web/serverfarms``             a record; ``sku.capacity`` is the instance count
``Microsoft.Web/sites``                   a running front-end process (:mod:`.sites`)
anything else in a resource group         a record of the declaration, ``Succeeded``
========================================  ===================================================

The engine calls :meth:`LocalProvider.put` for each resource of a deployment and reads
runtime state back through :meth:`get` and :meth:`list_keys` (``reference()``,
``listKeys()``). Failures are :class:`TemplateError` with ARM's codes, so the deployment
fails with a message naming the resource.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from provisioner.errors import CdpError
from provisioner.localcloud import LocalCloud, azurite
from provisioner.localcloud.context import ResolvedResource
from provisioner.localcloud.expressions import TemplateError
from provisioner.localcloud.management.sites import FrontEnds, host_name

if TYPE_CHECKING:
    from provisioner.localcloud.management.models import ManagementBackend

log = logging.getLogger("cdp.management")

GROUP = "microsoft.resources/resourcegroups"
STORAGE = "microsoft.storage/storageaccounts"
PLAN = "microsoft.web/serverfarms"
SITE = "microsoft.web/sites"
NESTED = "microsoft.resources/deployments"
_STORAGE_NAME = re.compile(r"^[a-z0-9]{3,24}$")
_SITE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,58}[A-Za-z0-9])?$")
# Names that are global in Azure (they are DNS names); unique across the local cloud too.
GLOBAL_NAMES = {STORAGE: "StorageAccountAlreadyTaken", SITE: "WebsiteAlreadyExists"}


class LocalProvider:
    def __init__(self, backend: "ManagementBackend", cloud: LocalCloud) -> None:
        self.backend = backend
        self.cloud = cloud
        self.sites = FrontEnds(backend.folder / "sites", cloud.cert_paths)

    # -- the engine's ResourceProvider -----------------------------------------------------------

    def put(self, resource: ResolvedResource) -> dict[str, Any]:
        kind = resource.type.lower()
        if kind == GROUP:
            return self._put_group(resource)
        if kind == NESTED:
            raise TemplateError("InvalidTemplate", "nested deployments (Microsoft.Resources/deployments) "
                                "are not supported by the local cloud")
        if not resource.resource_group:
            raise TemplateError("InvalidTemplate", f"resource type '{resource.type}' at subscription "
                                "scope is not supported by the local cloud")
        from provisioner.localcloud.management.models import ArmError

        try:
            self.backend.get_resource_group(resource.subscription_id, resource.resource_group)
        except ArmError as error:
            raise TemplateError(error.code, error.message) from None
        self._check_global_name(resource)
        previous = self.backend.store.read("resources", resource.id)
        materialise = {STORAGE: self._put_storage, PLAN: self._put_plan, SITE: self._put_site}.get(
            kind, self._put_other)
        try:
            record = materialise(resource, previous)
        except CdpError as error:
            if isinstance(error, TemplateError):
                raise
            raise TemplateError("ResourceDeploymentFailure", str(error)) from None
        record["declared"] = resource.body
        self.backend.save_resource(record)
        return record["resource"]

    def get(self, resource_id: str) -> dict[str, Any] | None:
        group = self.backend.store.read("resource_groups", resource_id)
        if group is not None:
            return group
        record = self.backend.store.read("resources", resource_id)
        return self.refreshed(record)["resource"] if record else None

    def list_keys(self, resource_id: str, api_version: str) -> dict[str, Any] | None:
        record = self.backend.store.read("resources", resource_id)
        if record is None or record["resource"]["type"].lower() != STORAGE:
            return None
        return self._keys(record)

    # -- for the endpoint ------------------------------------------------------------------------

    def refreshed(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record with what may have moved since (Azurite's port, a process that died)."""
        resource = record["resource"]
        kind = resource["type"].lower()
        if kind == STORAGE:
            try:
                endpoint = self.cloud.blob_endpoint(resource["name"]) + "/"
            except CdpError:
                endpoint = None  # Azurite is stopped: keep the last known endpoint
            if endpoint:
                resource["properties"]["primaryEndpoints"]["blob"] = endpoint
        elif kind == SITE:
            running = self.sites.running(record.get("local"))
            resource["properties"]["state"] = "Running" if running else "Stopped"
        return record

    def keys_of(self, record: dict[str, Any]) -> dict[str, Any]:
        from provisioner.localcloud.management.models import ArmError

        if record["resource"]["type"].lower() != STORAGE:
            raise ArmError(400, "InvalidResourceType", f"listKeys is not an operation of "
                           f"'{record['resource']['type']}'.")
        return self._keys(record)

    def delete(self, record: dict[str, Any]) -> None:
        """Remove what the resource is on this machine; the caller drops the record."""
        kind = record["resource"]["type"].lower()
        if kind == SITE:
            self.sites.stop(record.get("local"))
        elif kind == STORAGE:
            self.cloud.remove_account(record["resource"]["name"])

    @staticmethod
    def deletion_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Front ends first (they use the rest), storage accounts last."""
        rank = {SITE: 0, STORAGE: 2}
        return sorted(records, key=lambda r: rank.get(r["resource"]["type"].lower(), 1))

    def start_all(self) -> None:
        """Start the front end of every recorded site that is not running (after a restart),
        side by side; one that fails is logged and left stopped."""
        stopped = [r for r in self.backend.store.values("resources")
                   if r["resource"]["type"].lower() == SITE and not self.sites.running(r.get("local"))]

        def start(record: dict[str, Any]) -> None:
            try:
                self._run_site(record)
            except CdpError as error:
                log.error("front end %s did not start: %s", record["resource"]["name"], error)
                return
            self.backend.save_resource(record)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(start, stopped))

    def stop_all(self) -> None:
        for record in self.backend.store.values("resources"):
            if record["resource"]["type"].lower() == SITE:
                self.sites.stop(record.get("local"))

    # -- the resource types ----------------------------------------------------------------------

    def _put_group(self, resource: ResolvedResource) -> dict[str, Any]:
        from provisioner.localcloud.management.models import ArmError

        location = resource.location
        if not isinstance(location, str) or not location:
            raise TemplateError("LocationRequired", f"resource group '{resource.name}' has no location")
        try:
            _, group = self.backend.put_resource_group(resource.subscription_id, resource.name,
                                                       location, resource.body.get("tags") or {})
        except ArmError as error:
            raise TemplateError(error.code, error.message) from None
        return group

    def _put_storage(self, resource: ResolvedResource, previous: dict | None) -> dict[str, Any]:
        name = resource.name
        if not _STORAGE_NAME.match(name):
            raise TemplateError("AccountNameInvalid", f"'{name}' is not a valid storage account name: "
                                "3 to 24 characters, numbers and lower-case letters only")
        self.cloud.add_account(name)
        body = resource.body
        sku = dict(body.get("sku") or {"name": "Standard_LRS"})
        sku.setdefault("tier", "Premium" if str(sku.get("name", "")).startswith("Premium") else "Standard")
        created = (previous or {}).get("resource", {}).get("properties", {}).get("creationTime") or _now()
        properties = {
            **(body.get("properties") or {}),
            "provisioningState": "Succeeded", "creationTime": created,
            "primaryEndpoints": {"blob": self.cloud.blob_endpoint(name) + "/"},
            "primaryLocation": body.get("location"), "statusOfPrimary": "available",
        }
        return {"resource": self._arm_json(resource, properties, sku=sku), "local": {}}

    def _put_plan(self, resource: ResolvedResource, previous: dict | None) -> dict[str, Any]:
        sku = dict(resource.body.get("sku") or {})
        capacity = sku.get("capacity", 1)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise TemplateError("InvalidParameter", f"plan '{resource.name}': sku.capacity must be "
                                f"a positive integer, got {capacity!r}")
        sku["capacity"] = capacity
        properties = {**(resource.body.get("properties") or {}), "provisioningState": "Succeeded",
                      "status": "Ready", "numberOfWorkers": capacity, "maximumNumberOfWorkers": 30}
        return {"resource": self._arm_json(resource, properties, sku=sku), "local": {}}

    def _put_site(self, resource: ResolvedResource, previous: dict | None) -> dict[str, Any]:
        if not _SITE_NAME.match(resource.name):
            raise TemplateError("InvalidSiteName", f"'{resource.name}' is not a valid site name: "
                                "letters, digits and inner hyphens, at most 60 characters")
        properties = dict(resource.body.get("properties") or {})
        farm = properties.get("serverFarmId")
        if farm and self.backend.store.read("resources", farm) is None:
            raise TemplateError("NotFound", f"Cannot find ServerFarm '{farm}'.")
        _app_settings(resource.name, properties)  # checked before anything starts
        identity = self._identity(resource, previous)
        record = {"resource": self._arm_json(resource, properties, identity=identity),
                  "declared": resource.body, "local": (previous or {}).get("local")}
        self._run_site(record)
        return record

    def _put_other(self, resource: ResolvedResource, previous: dict | None) -> dict[str, Any]:
        properties = {**(resource.body.get("properties") or {}), "provisioningState": "Succeeded"}
        return {"resource": self._arm_json(resource, properties), "local": {}}

    # -- helpers ---------------------------------------------------------------------------------

    def _run_site(self, record: dict[str, Any]) -> None:
        """Start or keep the site's process; fill in its host names. Updates ``record``."""
        resource = record["resource"]
        declared = record["declared"].get("properties") or {}
        settings = _app_settings(resource["name"], declared)
        group = resource["id"].split("/")[4]
        # What App Service sets besides the app settings (one instance runs locally).
        extra = {"WEBSITE_SITE_NAME": resource["name"], "WEBSITE_RESOURCE_GROUP": group,
                 "WEBSITE_INSTANCE_ID": hashlib.sha256(resource["id"].lower().encode()).hexdigest()}
        extra.update(self._managed_identity(settings))
        record["local"] = self.sites.run(resource["name"], settings, extra, record.get("local"))
        host = host_name(record["local"])
        properties = resource["properties"]
        site_config = dict(properties.get("siteConfig") or {})
        site_config["appSettings"] = None  # as ARM: app settings are read with list, not GET
        properties.update(siteConfig=site_config, state="Running", defaultHostName=host,
                          hostNames=[host], enabledHostNames=[host], usageState="Normal",
                          availabilityState="Normal",
                          localProcess={"pid": record["local"]["pid"], "log": record["local"]["log"]})

    def _managed_identity(self, settings: dict[str, str]) -> dict[str, str]:
        """What the web app's managed identity gives it on Azure, emulated: access to its
        distribution point's storage account (the account key) through the local CA."""
        account = settings.get("CDP_STORAGE_ACCOUNT")
        # Read the accounts file without LocalCloud's lock: this runs while the endpoint
        # restarts its sites, under a `cdp local start` that holds that lock.
        key = azurite.load_accounts(self.cloud.accounts_path).get(account or "")
        if not key:
            return {}
        return {"CDP_STORAGE_KEY": key, "CDP_CA_BUNDLE": str(self.cloud.ca_bundle)}

    def _check_global_name(self, resource: ResolvedResource) -> None:
        kind = resource.type.lower()
        if kind not in GLOBAL_NAMES:
            return
        for record in self.backend.store.values("resources"):
            other = record["resource"]
            if (other["type"].lower() == kind and other["name"].lower() == resource.name.lower()
                    and other["id"].lower() != resource.id.lower()):
                raise TemplateError(GLOBAL_NAMES[kind], f"The name '{resource.name}' is already "
                                    f"taken by {other['id']}.")

    def _identity(self, resource: ResolvedResource, previous: dict | None) -> dict[str, Any] | None:
        identity = resource.body.get("identity")
        if not isinstance(identity, dict) or "systemassigned" not in str(identity.get("type", "")).lower():
            return identity
        old = (previous or {}).get("resource", {}).get("identity") or {}
        return {**identity, "principalId": old.get("principalId") or str(uuid.uuid4()),
                "tenantId": self.backend.tenant_id}

    def _arm_json(self, resource: ResolvedResource, properties: dict[str, Any], *,
                  sku: dict | None = None, identity: dict | None = None) -> dict[str, Any]:
        body = resource.body
        arm = {"id": resource.id, "name": resource.name, "type": resource.type,
               "location": body.get("location"), "tags": body.get("tags") or {}}
        for key, value in (("kind", body.get("kind")), ("sku", sku or body.get("sku")),
                           ("identity", identity or body.get("identity"))):
            if value is not None:
                arm[key] = value
        arm["properties"] = properties
        return arm

    def _keys(self, record: dict[str, Any]) -> dict[str, Any]:
        key = self.cloud.account_key(record["resource"]["name"])
        created = record["resource"]["properties"].get("creationTime")
        return {"keys": [{"keyName": "key1", "value": key, "permissions": "FULL", "creationTime": created}]}


def _app_settings(site: str, properties: dict[str, Any]) -> dict[str, str]:
    """``siteConfig.appSettings`` (``[{"name", "value"}]``) as environment variables."""
    given = (properties.get("siteConfig") or {}).get("appSettings") or []
    if not isinstance(given, list):
        raise TemplateError("InvalidParameter", f"site '{site}': siteConfig.appSettings must be an array")
    settings = {}
    for item in given:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise TemplateError("InvalidParameter", f"site '{site}': each app setting needs a name")
        value = item.get("value")
        if isinstance(value, bool):
            value = "true" if value else "false"
        settings[item["name"]] = "" if value is None else str(value)
    return settings


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
