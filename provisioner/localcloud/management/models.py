"""The local Azure Resource Manager: state and logic, one method per ARM operation.

:class:`ManagementBackend` knows resource groups, resources by id, storage ``listKeys``,
long-running operations and (from :class:`~.deployments.DeploymentsMixin`) template
deployments. It speaks in ARM's JSON shapes and raises :class:`ArmError` with ARM's error
codes; :mod:`.responses` turns both into HTTP. What a resource *is* locally (an Azurite
account, a front-end process) is the business of :mod:`.provider`.

Work that changes resources (deployments, deletions) runs in background threads, one at a
time (``_work``), as long-running operations whose status the SDK polls.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Callable

from provisioner.errors import CdpError
from provisioner.localcloud.expressions import TemplateError
from provisioner.localcloud.management.deployments import DeploymentsMixin
from provisioner.localcloud.management.store import Store

log = logging.getLogger("cdp.management")

RESOURCE_GROUP_TYPE = "Microsoft.Resources/resourceGroups"
GROUP_NAME = re.compile(r"^[-\w._()]{1,90}$")
_RESOURCE_ID = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)"
    r"/providers/(?P<namespace>[^/]+)/(?P<rest>.+?)/?$",
    re.IGNORECASE,
)
TERMINAL = ("Succeeded", "Failed", "Canceled")
KEEP_OPERATIONS = 200  # finished operations kept for late pollers
INTERRUPTED = "the local management endpoint stopped before the operation finished; run it again"


class ArmError(Exception):
    """An ARM error answer: HTTP ``status`` and ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def group_id(subscription: str, group: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}"


def group_not_found(group: str) -> ArmError:
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")


def parse_resource_id(resource_id: str) -> tuple[str, str, str, str]:
    """``(subscription, group, type, name)`` of a resource id in a group; ArmError if it is not one.

    Child types interleave: ``.../providers/Microsoft.Web/sites/app/config/web`` has type
    ``Microsoft.Web/sites/config`` and name ``app/web``.
    """
    match = _RESOURCE_ID.match(resource_id)
    segments = match.group("rest").split("/") if match else []
    if not match or len(segments) % 2:
        raise ArmError(400, "InvalidResourceId", f"'{resource_id}' is not a valid resource id.")
    kinds, names = segments[0::2], segments[1::2]
    return (match.group("subscription"), match.group("group"),
            "/".join([match.group("namespace"), *kinds]), "/".join(names))


class ManagementBackend(DeploymentsMixin):
    """The state of one site's local management endpoint, persisted under ``folder``."""

    def __init__(self, folder: Path, provider_factory: Callable[["ManagementBackend"], Any]) -> None:
        self.folder = folder
        self.store = Store(folder)
        self.provider = provider_factory(self)
        self._work = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Fail what a previous run left unfinished; start the recorded front ends again."""
        with self.store.transaction() as data:
            for operation in data["operations"].values():
                if operation["status"] not in TERMINAL:
                    operation.update(status="Failed", error={"code": "OperationInterrupted",
                                                             "message": INTERRUPTED})
            for group in data["resource_groups"].values():
                if group["properties"].get("provisioningState") == "Deleting":
                    group["properties"]["provisioningState"] = "Succeeded"
            self.interrupt_deployments(data)
        self.provider.start_all()

    def stop(self) -> None:
        """Stop the front-end processes; their records stay, to be started again."""
        log.info("stopping the front ends")
        self.provider.stop_all()

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait for the background operations started so far (tests and shutdown)."""
        for thread in list(self._threads):
            thread.join(timeout)

    # -- subscriptions ---------------------------------------------------------------------------

    def record_subscription(self, subscription: str) -> None:
        if subscription.lower() in self.store.data["subscriptions"]:
            return
        with self.store.transaction() as data:
            data["subscriptions"][subscription.lower()] = {"subscriptionId": subscription,
                                                           "firstSeen": now()}

    def get_subscription(self, subscription: str) -> dict[str, Any]:
        self.record_subscription(subscription)
        return {"id": f"/subscriptions/{subscription}", "subscriptionId": subscription,
                "displayName": "cdp local subscription", "state": "Enabled",
                "tenantId": self.tenant_id}

    @property
    def tenant_id(self) -> str:
        return "00000000-0000-0000-0000-000000000000"

    # -- resource groups -------------------------------------------------------------------------

    def create_or_update_resource_group(self, subscription: str, name: str,
                                        body: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """PUT: ``(created, group)``; the location of an existing group cannot change."""
        location = body.get("location")
        if not isinstance(location, str) or not location:
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        return self.put_resource_group(subscription, name, location, body.get("tags") or {},
                                       managed_by=body.get("managedBy"))

    def put_resource_group(self, subscription: str, name: str, location: str,
                           tags: dict[str, str], managed_by: str | None = None
                           ) -> tuple[bool, dict[str, Any]]:
        if not GROUP_NAME.match(name) or name.endswith("."):
            raise ArmError(400, "InvalidResourceGroup", f"The provided resource group name '{name}' "
                           "has these invalid characters or is too long.")
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise ArmError(400, "InvalidTag", "Tags must be an object of string values.")
        self.record_subscription(subscription)
        key = group_id(subscription, name).lower()
        with self.store.transaction() as data:
            group = data["resource_groups"].get(key)
            if group is not None:
                if group["properties"].get("provisioningState") == "Deleting":
                    raise ArmError(409, "ResourceGroupBeingDeleted",
                                   f"The resource group '{group['name']}' is in deprovisioning state "
                                   "and cannot perform this operation.")
                if _norm_location(group["location"]) != _norm_location(location):
                    raise ArmError(409, "InvalidResourceGroupLocation",
                                   f"Invalid resource group location '{location}'. The Resource group "
                                   f"already exists in location '{group['location']}'.")
                group["tags"] = dict(tags)
                return False, dict(group)
            group = {"id": group_id(subscription, name), "name": name, "type": RESOURCE_GROUP_TYPE,
                     "location": location, "tags": dict(tags),
                     "properties": {"provisioningState": "Succeeded"}}
            if managed_by:
                group["managedBy"] = managed_by
            data["resource_groups"][key] = group
            return True, dict(group)

    def update_resource_group(self, subscription: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PATCH: replace the tags (and managedBy) given; the location stays."""
        tags = body.get("tags")
        if tags is not None and (not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values())):
            raise ArmError(400, "InvalidTag", "Tags must be an object of string values.")
        with self.store.transaction() as data:
            group = data["resource_groups"].get(group_id(subscription, name).lower())
            if group is None:
                raise group_not_found(name)
            if tags is not None:
                group["tags"] = dict(tags)
            if body.get("managedBy"):
                group["managedBy"] = body["managedBy"]
            return dict(group)

    def get_resource_group(self, subscription: str, name: str) -> dict[str, Any]:
        group = self.store.read("resource_groups", group_id(subscription, name))
        if group is None:
            raise group_not_found(name)
        return group

    def check_resource_group_existence(self, subscription: str, name: str) -> bool:
        return self.store.read("resource_groups", group_id(subscription, name)) is not None

    def list_resource_groups(self, subscription: str, tag_filter: tuple[str, str | None] | None
                             ) -> list[dict[str, Any]]:
        prefix = f"/subscriptions/{subscription}/".lower()
        groups = [g for g in self.store.values("resource_groups") if g["id"].lower().startswith(prefix)]
        if tag_filter:
            tag, value = tag_filter
            groups = [g for g in groups if tag in g.get("tags", {})
                      and (value is None or g["tags"][tag] == value)]
        return sorted(groups, key=lambda g: g["name"].lower())

    def delete_resource_group(self, subscription: str, name: str) -> str:
        """Start deleting the group, its resources and its deployments; return the operation id."""
        key = group_id(subscription, name).lower()
        with self.store.transaction() as data:
            group = data["resource_groups"].get(key)
            if group is None:
                raise group_not_found(name)
            group["properties"]["provisioningState"] = "Deleting"

        def on_end(status: str, error: dict | None) -> None:
            if status == "Failed":  # what is left can be deleted again
                with self.store.transaction() as data:
                    if key in data["resource_groups"]:
                        data["resource_groups"][key]["properties"]["provisioningState"] = "Succeeded"

        return self.start_operation("delete", group["id"], lambda: self._delete_group_now(key), on_end)

    def _delete_group_now(self, key: str) -> None:
        prefix = key + "/"
        for record in self.provider.deletion_order(self.group_resources(key)):
            self._delete_resource_now(record["resource"]["id"])
        with self.store.transaction() as data:
            for deployment_key in [k for k in data["deployments"] if k.startswith(prefix)]:
                del data["deployments"][deployment_key]
            data["resource_groups"].pop(key, None)

    def group_resources(self, group_key: str) -> list[dict[str, Any]]:
        prefix = group_key.lower() + "/providers/"
        return [r for r in self.store.values("resources") if r["resource"]["id"].lower().startswith(prefix)]

    # -- resources by id -------------------------------------------------------------------------

    def get_resource(self, resource_id: str) -> dict[str, Any]:
        return self.provider.refreshed(self._resource_record(resource_id))["resource"]

    def check_resource_existence(self, resource_id: str) -> bool:
        try:
            self._resource_record(resource_id)
        except ArmError as error:
            if error.status == 404:
                return False
            raise
        return True

    def delete_resource(self, resource_id: str) -> str | None:
        """Start deleting a resource; None (nothing to do) if it does not exist."""
        subscription, group, _, _ = parse_resource_id(resource_id)
        self.get_resource_group(subscription, group)
        record = self.store.read("resources", resource_id)
        if record is None:
            return None
        return self.start_operation("delete", record["resource"]["id"],
                                    lambda: self._delete_resource_now(resource_id))

    def _delete_resource_now(self, resource_id: str) -> None:
        record = self.store.read("resources", resource_id)
        if record is None:
            return
        self.provider.delete(record)
        with self.store.transaction() as data:
            data["resources"].pop(resource_id.lower(), None)

    def list_storage_account_keys(self, resource_id: str) -> dict[str, Any]:
        record = self._resource_record(resource_id)
        return self.provider.keys_of(record)

    def _resource_record(self, resource_id: str) -> dict[str, Any]:
        subscription, group, resource_type, name = parse_resource_id(resource_id)
        self.get_resource_group(subscription, group)
        record = self.store.read("resources", resource_id)
        if record is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource '{resource_type}/{name}' under "
                           f"resource group '{group}' was not found.")
        return record

    def save_resource(self, record: dict[str, Any]) -> None:
        with self.store.transaction() as data:
            data["resources"][record["resource"]["id"].lower()] = record

    # -- long-running operations -----------------------------------------------------------------

    def start_operation(self, kind: str, target: str, work: Callable[[], None],
                        on_end: Callable[[str, dict | None], None] | None = None) -> str:
        """Run ``work`` in the background, one operation at a time; return the operation id."""
        op_id = uuid.uuid4().hex
        with self.store.transaction() as data:
            finished = sorted((op.get("ended", ""), k) for k, op in data["operations"].items()
                              if op["status"] in TERMINAL)
            for _, old in finished[: max(0, len(finished) - KEEP_OPERATIONS)]:  # oldest first
                del data["operations"][old]
            data["operations"][op_id] = {"status": "Accepted", "kind": kind, "target": target,
                                         "started": now()}
        thread = threading.Thread(target=self._run_operation, args=(op_id, work, on_end),
                                  name=f"arm-{kind}-{op_id[:8]}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return op_id

    def _run_operation(self, op_id: str, work: Callable[[], None],
                       on_end: Callable[[str, dict | None], None] | None) -> None:
        with self._work:
            self._set_operation(op_id, "Running")
            error = None
            try:
                work()
            except ArmError as exc:
                error = {"code": exc.code, "message": exc.message}
            except TemplateError as exc:
                error = {"code": exc.code, "message": exc.message}
            except CdpError as exc:
                error = {"code": "ResourceOperationFailure", "message": str(exc)}
            except Exception as exc:  # a bug: the operation fails, the server keeps serving
                log.exception("operation %s failed", op_id)
                error = {"code": "InternalServerError", "message": f"{type(exc).__name__}: {exc}"}
            status = "Failed" if error else "Succeeded"
            operation = self.store.read("operations", op_id) or {}
            log.info("%s %s: %s%s", operation.get("kind"), operation.get("target"), status,
                     f" ({error['code']}: {error['message']})" if error else "")
            if on_end:
                on_end(status, error)
            self._set_operation(op_id, status, error)

    def _set_operation(self, op_id: str, status: str, error: dict | None = None) -> None:
        with self.store.transaction() as data:
            operation = data["operations"][op_id]
            operation["status"] = status
            if error:
                operation["error"] = error
            if status in TERMINAL:
                operation["ended"] = now()

    def get_operation(self, op_id: str) -> dict[str, Any]:
        operation = self.store.read("operations", op_id)
        if operation is None:
            raise ArmError(404, "OperationNotFound", f"The operation '{op_id}' was not found.")
        return operation


def _norm_location(location: str) -> str:
    return location.replace(" ", "").lower()
