"""The routes of the local management endpoint: path pattern -> :class:`~.responses.ArmResponses`
method and the HTTP methods it takes. Paths compare case-insensitively, as in ARM; the
first pattern that matches wins, so the specific ones come before resources by id.
"""

from __future__ import annotations

import re

SUB = r"^/subscriptions/(?P<subscription>[^/]+)"
GROUP = r"/resourcegroups/(?P<group>[^/]+)"
DEPLOYMENTS = SUB + r"(?:" + GROUP + r")?/providers/Microsoft\.Resources/deployments"
DEPLOYMENT = DEPLOYMENTS + r"/(?P<deployment>[-\w._()]{1,64})"

url_paths: list[tuple[str, str, tuple[str, ...]]] = [
    (SUB + r"/?$", "subscription", ("GET",)),
    (SUB + r"/resourcegroups/?$", "resource_groups", ("GET",)),
    (SUB + r"/operationresults/(?P<operation>[^/]+)$", "operation_result", ("GET",)),
    (DEPLOYMENTS + r"/?$", "deployments", ("GET",)),
    (DEPLOYMENT + r"/operationStatuses/(?P<operation>[^/]+)$", "deployment_operation_status", ("GET",)),
    (DEPLOYMENT + r"/(?P<action>validate|whatIf)$", "deployment_action", ("POST",)),
    (DEPLOYMENT + r"$", "deployment", ("GET", "HEAD", "PUT", "DELETE")),
    (SUB + GROUP + r"$", "resource_group", ("GET", "HEAD", "PUT", "PATCH", "DELETE")),
    (SUB + GROUP + r"/providers/Microsoft\.Storage/storageAccounts/[^/]+/listKeys$", "list_keys", ("POST",)),
    (SUB + GROUP + r"/providers/[^/]+/[^/]+/[^/]+(?:/[^/]+/[^/]+)*/?$", "resource",
     ("GET", "HEAD", "PUT", "DELETE")),
]

ROUTES = [(re.compile(pattern, re.IGNORECASE), handler, methods) for pattern, handler, methods in url_paths]


def match(path: str) -> tuple[str, tuple[str, ...], dict[str, str]] | None:
    """``(handler name, methods, path parameters)`` of the first route matching ``path``."""
    for pattern, handler, methods in ROUTES:
        found = pattern.match(path)
        if found:
            return handler, methods, {k: v for k, v in found.groupdict().items() if v is not None}
    return None
