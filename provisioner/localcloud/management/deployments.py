"""Template deployments at subscription and resource-group scope: the ARM operations.

A PUT records the deployment as ``Accepted`` and returns at once; a background operation
(see :meth:`ManagementBackend.start_operation`) moves it to ``Running`` and evaluates the
template with :mod:`provisioner.localcloud.engine`, whose provider materialises each
resource, then ``Succeeded`` with the outputs or ``Failed`` with the engine's error.
Validate and what-if evaluate the template without deploying (``engine.plan``).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from provisioner.localcloud import engine
from provisioner.localcloud.parameters import is_secure
from provisioner.localcloud.management import whatif

if TYPE_CHECKING:
    from provisioner.localcloud.management.models import ManagementBackend

DEPLOYMENT_TYPE = "Microsoft.Resources/deployments"
ACTIVE = ("Accepted", "Running")
_MODES = {"incremental": "Incremental", "complete": "Complete"}
_TYPE_NAMES = {"string": "String", "securestring": "SecureString", "int": "Int", "bool": "Bool",
               "object": "Object", "secureobject": "SecureObject", "array": "Array"}


def deployment_id(subscription: str, group: str | None, name: str) -> str:
    scope = f"/subscriptions/{subscription}" + (f"/resourceGroups/{group}" if group else "")
    return f"{scope}/providers/{DEPLOYMENT_TYPE}/{name}"


class DeploymentsMixin:
    """The deployment operations of :class:`ManagementBackend`."""

    # -- PUT / GET / list / delete ----------------------------------------------------------------

    def create_or_update_deployment(self: "ManagementBackend", subscription: str, group: str | None,
                                    name: str, body: Any) -> tuple[bool, dict[str, Any], str]:
        """Accept a deployment; ``(created, deployment, operation id)``. It runs in the background."""
        from provisioner.localcloud.management.models import ArmError, now

        request = _request(body, group)
        group_record = self.get_resource_group(subscription, group) if group else None
        location = group_record["location"] if group_record else request["location"]
        did = deployment_id(subscription, group_record["name"] if group_record else None, name)
        with self.store.transaction() as data:
            previous = data["deployments"].get(did.lower())
            if previous and previous["deployment"]["properties"]["provisioningState"] in ACTIVE:
                raise ArmError(409, "DeploymentActive", f"Unable to edit or replace deployment "
                               f"'{name}': previous deployment is still active.")
            deployment = {
                "id": did, "name": name, "type": DEPLOYMENT_TYPE,
                "properties": {
                    "provisioningState": "Accepted", "mode": request["mode"],
                    "correlationId": str(uuid.uuid4()), "timestamp": now(),
                    "templateHash": _template_hash(request["template"]),
                    "parameters": _shown_parameters(request["template"], request["parameters"]),
                    "outputs": {}, "outputResources": [], "dependencies": [], "providers": [],
                },
            }
            if group is None:
                deployment["location"] = location
            if request["tags"]:
                deployment["tags"] = request["tags"]
            data["deployments"][did.lower()] = {"deployment": deployment, "operation": None}
        started = time.monotonic()

        def work() -> None:
            self._set_deployment(did, provisioningState="Running")
            scope = self._scope(subscription, group, name, location)
            # As ARM's preflight: a template that cannot be evaluated changes nothing.
            engine.plan(request["template"], request["parameters"], scope)
            result = engine.deploy(request["template"], request["parameters"], scope, self.provider)
            if request["mode"] == "Complete":
                keep = {rid.lower() for rid in result.resources}
                for record in self.group_resources(f"/subscriptions/{subscription}/resourcegroups/{group}"):
                    if record["resource"]["id"].lower() not in keep:
                        self._delete_resource_now(record["resource"]["id"])
            self._set_deployment(did, outputs=result.outputs,
                                 outputResources=[{"id": rid} for rid in result.resources])

        def on_end(status: str, error: dict | None) -> None:
            fields = {"provisioningState": status, "timestamp": now(),
                      "duration": f"PT{time.monotonic() - started:.3f}S"}
            if error:
                fields["error"] = error
            self._set_deployment(did, **fields)

        op_id = self.start_operation("deployment", did, work, on_end)
        with self.store.transaction() as data:
            data["deployments"][did.lower()]["operation"] = op_id
        return previous is None, deployment, op_id

    def get_deployment(self: "ManagementBackend", subscription: str, group: str | None,
                       name: str) -> dict[str, Any]:
        return self._deployment_record(subscription, group, name)["deployment"]

    def check_deployment_existence(self: "ManagementBackend", subscription: str, group: str | None,
                                   name: str) -> bool:
        if group and not self.check_resource_group_existence(subscription, group):
            return False
        return self.store.read("deployments", deployment_id(subscription, group, name)) is not None

    def list_deployments(self: "ManagementBackend", subscription: str, group: str | None
                         ) -> list[dict[str, Any]]:
        if group:
            self.get_resource_group(subscription, group)
        prefix = deployment_id(subscription, group, "").lower()
        return [r["deployment"] for r in self.store.values("deployments")
                if r["deployment"]["id"].lower().startswith(prefix)]

    def delete_deployment(self: "ManagementBackend", subscription: str, group: str | None,
                          name: str) -> str:
        """Start removing a deployment from the history (its resources stay)."""
        from provisioner.localcloud.management.models import ArmError

        record = self._deployment_record(subscription, group, name)
        if record["deployment"]["properties"]["provisioningState"] in ACTIVE:
            raise ArmError(409, "DeploymentActive", f"The deployment '{name}' is still active "
                           "and cannot be deleted.")
        did = record["deployment"]["id"]

        def work() -> None:
            with self.store.transaction() as data:
                data["deployments"].pop(did.lower(), None)

        return self.start_operation("delete", did, work)

    def get_deployment_operation_status(self: "ManagementBackend", subscription: str,
                                        group: str | None, name: str, op_id: str) -> dict[str, Any]:
        from provisioner.localcloud.management.models import ArmError

        record = self._deployment_record(subscription, group, name)
        if record["operation"] != op_id:
            raise ArmError(404, "OperationNotFound", f"The operation '{op_id}' of deployment "
                           f"'{name}' was not found.")
        operation = self.get_operation(op_id)
        status = {"status": operation["status"]}
        if operation.get("error"):
            status["error"] = operation["error"]
        return status

    # -- validate and what-if ---------------------------------------------------------------------

    def validate_deployment(self: "ManagementBackend", subscription: str, group: str | None,
                            name: str, body: Any) -> dict[str, Any]:
        """The template evaluated without deploying; 400 with the engine's error if it fails."""
        from provisioner.localcloud.management.models import now

        request, planned = self._plan(subscription, group, name, body)
        return {
            "id": deployment_id(subscription, group, name), "name": name, "type": DEPLOYMENT_TYPE,
            "properties": {
                "provisioningState": "Succeeded", "mode": request["mode"], "timestamp": now(),
                "correlationId": str(uuid.uuid4()),
                "templateHash": _template_hash(request["template"]),
                "parameters": _shown_parameters(request["template"], request["parameters"]),
                "validatedResources": [{"id": r.id} for r in planned.resources],
            },
        }

    def what_if_deployment(self: "ManagementBackend", subscription: str, group: str | None,
                           name: str, body: Any) -> dict[str, Any]:
        """What a deployment would create, modify, delete or leave unchanged."""
        request, planned = self._plan(subscription, group, name, body)
        changes = [whatif.change(resource, self._current(resource.id)) for resource in planned.resources]
        if request["mode"] == "Complete":
            planned_ids = {r.id.lower() for r in planned.resources}
            for record in self.group_resources(f"/subscriptions/{subscription}/resourcegroups/{group}"):
                if record["resource"]["id"].lower() not in planned_ids:
                    changes.append(whatif.deletion(record["resource"]))
        return {"status": "Succeeded", "properties": {"changes": changes}}

    def _plan(self: "ManagementBackend", subscription: str, group: str | None, name: str,
              body: Any) -> tuple[dict[str, Any], "engine.Plan"]:
        from provisioner.localcloud.management.models import ArmError

        request = _request(body, group)
        location = self.get_resource_group(subscription, group)["location"] if group else request["location"]
        scope = self._scope(subscription, group, name, location)
        try:
            planned = engine.plan(request["template"], request["parameters"], scope)
        except engine.TemplateError as error:
            raise ArmError(400, error.code, error.message) from None
        return request, planned

    def _current(self: "ManagementBackend", resource_id: str) -> dict[str, Any] | None:
        """What a resource is now, for what-if: a group's JSON, or a resource's record."""
        from provisioner.localcloud.management.models import RESOURCE_GROUP_TYPE, ArmError, parse_resource_id

        group = self.store.read("resource_groups", resource_id)
        if group is not None:
            return {"resource": group, "declared": {"location": group["location"], "tags": group["tags"]},
                    "type": RESOURCE_GROUP_TYPE}
        try:
            parse_resource_id(resource_id)
        except ArmError:
            return None
        return self.store.read("resources", resource_id)

    # -- helpers ----------------------------------------------------------------------------------

    def _scope(self: "ManagementBackend", subscription: str, group: str | None, name: str,
               location: str) -> engine.DeploymentScope:
        tags = {}
        if group:
            record = self.get_resource_group(subscription, group)
            group, location, tags = record["name"], record["location"], record.get("tags") or {}
        return engine.DeploymentScope(subscription_id=subscription, tenant_id=self.tenant_id,
                                      location=location, deployment_name=name,
                                      resource_group=group, resource_group_tags=tags)

    def _deployment_record(self: "ManagementBackend", subscription: str, group: str | None,
                           name: str) -> dict[str, Any]:
        from provisioner.localcloud.management.models import ArmError

        if group:
            self.get_resource_group(subscription, group)
        record = self.store.read("deployments", deployment_id(subscription, group, name))
        if record is None:
            raise ArmError(404, "DeploymentNotFound", f"Deployment '{name}' could not be found.")
        return record

    def _set_deployment(self: "ManagementBackend", did: str, **properties: Any) -> None:
        with self.store.transaction() as data:
            record = data["deployments"].get(did.lower())
            if record is not None:  # deleted meanwhile with its group
                record["deployment"]["properties"].update(properties)

    def interrupt_deployments(self: "ManagementBackend", data: dict[str, Any]) -> None:
        from provisioner.localcloud.management.models import INTERRUPTED

        for record in data["deployments"].values():
            properties = record["deployment"]["properties"]
            if properties["provisioningState"] in ACTIVE:
                properties.update(provisioningState="Failed",
                                  error={"code": "DeploymentInterrupted", "message": INTERRUPTED})


def _request(body: Any, group: str | None) -> dict[str, Any]:
    """The parts of a Deployment request body we use, checked as ARM checks them."""
    from provisioner.localcloud.management.models import ArmError

    def invalid(message: str) -> ArmError:
        return ArmError(400, "InvalidRequestContent", message)

    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        raise invalid("The request content must be a deployment with 'properties'.")
    properties = body["properties"]
    if "templateLink" in properties or "parametersLink" in properties:
        raise invalid("templateLink and parametersLink are not supported by the local cloud; "
                      "send the template and parameters inline.")
    template, parameters = properties.get("template"), properties.get("parameters") or {}
    if not isinstance(template, dict):
        raise invalid("The deployment has no 'template' object.")
    if not isinstance(parameters, dict):
        raise invalid("The deployment 'parameters' must be an object.")
    mode = _MODES.get(str(properties.get("mode") or "Incremental").lower())
    if mode is None:
        raise invalid(f"The deployment mode '{properties.get('mode')}' is not valid: "
                      "use Incremental or Complete.")
    location = body.get("location")
    if group is None:
        if not isinstance(location, str) or not location:
            raise ArmError(400, "LocationRequired", "The location property is required for a "
                           "subscription-scope deployment.")
        if mode == "Complete":
            raise ArmError(400, "InvalidDeploymentMode", "The deployment mode 'Complete' is not "
                           "supported at subscription scope.")
    tags = body.get("tags") or {}
    return {"template": template, "parameters": parameters, "mode": mode, "location": location,
            "tags": tags if isinstance(tags, dict) else {}}


def _template_hash(template: dict[str, Any]) -> str:
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return str(int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big"))


def _shown_parameters(template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters as ARM shows them: declared type and value; secure ones without value."""
    declared = {name.lower(): d for name, d in (template.get("parameters") or {}).items()
                if isinstance(d, dict)}
    shown = {}
    for name, given in parameters.items():
        declaration = declared.get(name.lower(), {})
        kind = str(declaration.get("type", "string")).lower()
        entry: dict[str, Any] = {"type": _TYPE_NAMES.get(kind, kind)}
        if not is_secure(declaration):
            entry["value"] = given.get("value") if isinstance(given, dict) and "value" in given else given
        shown[name] = entry
    return shown
