"""HTTP in and out for the local management endpoint: parse the request, one backend call,
serialise the answer with the status codes and long-running-operation headers of ARM.

Long-running operations, as the SDK's ``ARMPolling`` follows them:

- deployment PUT: ``201`` with the deployment (``Accepted``), ``Azure-AsyncOperation`` (a
  status URL answering ``{"status": ...}``) and ``Retry-After``; after a terminal status the
  SDK GETs the deployment itself;
- deletes (resource group, resource, deployment): ``202`` with ``Location`` (an operation
  result URL answering ``202`` while running, then ``200``/``204``, or the error);
- validate and what-if are LROs to the SDK too, but answer at once (``200``, or ``400`` with
  the engine's error), which its poller accepts as finished.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from provisioner.localcloud.management.models import ArmError, ManagementBackend

RETRY_AFTER = "1"
API_VERSION = "2025-04-01"
_TAG_FILTER = re.compile(
    r"^\s*tagName\s+eq\s+'(?P<name>[^']*)'(?:\s+and\s+tagValue\s+eq\s+'(?P<value>[^']*)')?\s*$",
    re.IGNORECASE,
)


@dataclass
class ArmRequest:
    method: str
    path: str
    base_url: str  # https://127.0.0.1:PORT, for the URLs of operation headers
    params: dict[str, str]  # from the route
    query: dict[str, str]
    body: Any = None


@dataclass
class ArmResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class ArmResponses:
    """One method per route of :mod:`.urls`; each dispatches on the HTTP method."""

    def __init__(self, backend: ManagementBackend) -> None:
        self.backend = backend

    # -- subscriptions and operations ------------------------------------------------------------

    def subscription(self, request: ArmRequest) -> ArmResponse:
        return ArmResponse(200, self.backend.get_subscription(request.params["subscription"]))

    def operation_result(self, request: ArmRequest) -> ArmResponse:
        """A ``Location`` of a delete: 202 while running, 200 when done, the error if it failed."""
        operation = self.backend.get_operation(request.params["operation"])
        if operation["status"] == "Failed":
            error = operation.get("error") or {}
            raise ArmError(409, error.get("code", "OperationFailed"), error.get("message", "failed"))
        if operation["status"] == "Succeeded":
            return ArmResponse(200 if operation["kind"] != "delete" else 204)
        return ArmResponse(202, headers={"Location": _own_url(request), "Retry-After": RETRY_AFTER})

    # -- resource groups -------------------------------------------------------------------------

    def resource_groups(self, request: ArmRequest) -> ArmResponse:
        subscription = request.params["subscription"]
        tag_filter = None
        if request.query.get("$filter"):
            match = _TAG_FILTER.match(request.query["$filter"])
            if not match:
                raise ArmError(400, "InvalidFilter", "Only $filter=tagName eq 'x' [and tagValue eq 'y'] "
                               "is supported by the local cloud.")
            tag_filter = (match.group("name"), match.group("value"))
        groups = self.backend.list_resource_groups(subscription, tag_filter)
        if request.query.get("$top"):
            groups = groups[: _int(request.query["$top"], "$top")]
        return ArmResponse(200, {"value": groups})

    def resource_group(self, request: ArmRequest) -> ArmResponse:
        subscription, name = request.params["subscription"], request.params["group"]
        if request.method == "PUT":
            created, group = self.backend.create_or_update_resource_group(subscription, name, _object(request))
            return ArmResponse(201 if created else 200, group)
        if request.method == "HEAD":
            exists = self.backend.check_resource_group_existence(subscription, name)
            return ArmResponse(204 if exists else 404)
        if request.method == "PATCH":
            return ArmResponse(200, self.backend.update_resource_group(subscription, name, _object(request)))
        if request.method == "DELETE":
            op_id = self.backend.delete_resource_group(subscription, name)
            return self._accepted(request, subscription, op_id)
        return ArmResponse(200, self.backend.get_resource_group(subscription, name))

    # -- deployments -----------------------------------------------------------------------------

    def deployments(self, request: ArmRequest) -> ArmResponse:
        subscription, group = request.params["subscription"], request.params.get("group")
        return ArmResponse(200, {"value": self.backend.list_deployments(subscription, group)})

    def deployment(self, request: ArmRequest) -> ArmResponse:
        subscription, group = request.params["subscription"], request.params.get("group")
        name = request.params["deployment"]
        if request.method == "PUT":
            created, deployment, op_id = self.backend.create_or_update_deployment(
                subscription, group, name, _object(request))
            status_url = (f"{request.base_url}{_scope_path(request)}/deployments/{name}"
                          f"/operationStatuses/{op_id}?api-version={_api(request)}")
            return ArmResponse(201 if created else 200, deployment,
                               {"Azure-AsyncOperation": status_url, "Retry-After": RETRY_AFTER})
        if request.method == "HEAD":
            exists = self.backend.check_deployment_existence(subscription, group, name)
            return ArmResponse(204 if exists else 404)
        if request.method == "DELETE":
            op_id = self.backend.delete_deployment(subscription, group, name)
            return self._accepted(request, subscription, op_id)
        return ArmResponse(200, self.backend.get_deployment(subscription, group, name))

    def deployment_action(self, request: ArmRequest) -> ArmResponse:
        subscription, group = request.params["subscription"], request.params.get("group")
        name, action = request.params["deployment"], request.params["action"].lower()
        if action == "validate":
            result = self.backend.validate_deployment(subscription, group, name, _object(request))
        else:
            result = self.backend.what_if_deployment(subscription, group, name, _object(request))
        return ArmResponse(200, result)

    def deployment_operation_status(self, request: ArmRequest) -> ArmResponse:
        status = self.backend.get_deployment_operation_status(
            request.params["subscription"], request.params.get("group"),
            request.params["deployment"], request.params["operation"])
        headers = {} if status["status"] in ("Succeeded", "Failed", "Canceled") else {"Retry-After": RETRY_AFTER}
        return ArmResponse(200, status, headers)

    # -- resources by id -------------------------------------------------------------------------

    def resource(self, request: ArmRequest) -> ArmResponse:
        resource_id = request.path.rstrip("/")
        if request.method == "HEAD":
            return ArmResponse(204 if self.backend.check_resource_existence(resource_id) else 404)
        if request.method == "DELETE":
            op_id = self.backend.delete_resource(resource_id)
            if op_id is None:
                return ArmResponse(204)
            return self._accepted(request, request.params["subscription"], op_id)
        if request.method == "PUT":
            raise ArmError(405, "MethodNotAllowed", "Resources are created by template deployments "
                           "on the local cloud; PUT by id is not supported.")
        return ArmResponse(200, self.backend.get_resource(resource_id))

    def list_keys(self, request: ArmRequest) -> ArmResponse:
        resource_id = request.path.rstrip("/").rsplit("/", 1)[0]
        return ArmResponse(200, self.backend.list_storage_account_keys(resource_id))

    # -- helpers ---------------------------------------------------------------------------------

    def _accepted(self, request: ArmRequest, subscription: str, op_id: str) -> ArmResponse:
        location = (f"{request.base_url}/subscriptions/{subscription}/operationresults/{op_id}"
                    f"?api-version={_api(request)}")
        return ArmResponse(202, None, {"Location": location, "Retry-After": RETRY_AFTER})


def _object(request: ArmRequest) -> dict[str, Any]:
    if not isinstance(request.body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
    return request.body


def _api(request: ArmRequest) -> str:
    return request.query.get("api-version") or API_VERSION


def _own_url(request: ArmRequest) -> str:
    return f"{request.base_url}{request.path}?api-version={_api(request)}"


def _scope_path(request: ArmRequest) -> str:
    """``/subscriptions/s[/resourceGroups/g]/providers/Microsoft.Resources``."""
    scope = f"/subscriptions/{request.params['subscription']}"
    if request.params.get("group"):
        scope += f"/resourceGroups/{request.params['group']}"
    return scope + "/providers/Microsoft.Resources"


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ArmError(400, "InvalidQueryParameterValue", f"{name} must be an integer.") from None
