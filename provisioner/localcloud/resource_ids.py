"""Azure resource ids: built from a scope, a resource type and a name, as ARM builds them.

``Microsoft.Web/sites/config`` named ``app/web`` in group ``rg`` is
``/subscriptions/{s}/resourceGroups/rg/providers/Microsoft.Web/sites/app/config/web``: the
type's segments after the namespace interleave with the name's segments. Resource groups
themselves have the short form ``/subscriptions/{s}/resourceGroups/{name}``.
"""

from __future__ import annotations

from provisioner.localcloud.expressions import ExpressionError

RESOURCE_GROUP_TYPE = "Microsoft.Resources/resourceGroups"


def type_segments(resource_type: str) -> list[str]:
    """``Microsoft.Web/sites/config`` -> ``['Microsoft.Web', 'sites', 'config']``, checked."""
    segments = resource_type.split("/")
    if len(segments) < 2 or not all(segments) or "." not in segments[0]:
        raise ExpressionError.of(
            f"'{resource_type}' is not a resource type (expected 'Namespace.Provider/type[/child...]')"
        )
    return segments


def resource_id(subscription_id: str | None, resource_group: str | None, resource_type: str, names: list[str]) -> str:
    """The id of a resource; ``resource_group`` None gives a subscription-level id, and
    ``subscription_id`` None too a tenant-level one."""
    segments = type_segments(resource_type)
    if len(names) != len(segments) - 1:
        raise ExpressionError.of(
            f"resource type '{resource_type}' needs {len(segments) - 1} name segment(s), "
            f"got {len(names)}: '{'/'.join(names)}'"
        )
    if any(not name for name in names):
        raise ExpressionError.of(f"a name segment of the '{resource_type}' resource '{'/'.join(names)}' is empty")
    prefix = f"/subscriptions/{subscription_id}" if subscription_id else ""
    if resource_type.lower() == RESOURCE_GROUP_TYPE.lower() and subscription_id:
        return f"{prefix}/resourceGroups/{names[0]}"
    if resource_group:
        prefix += f"/resourceGroups/{resource_group}"
    path = segments[0] + "".join(f"/{kind}/{name}" for kind, name in zip(segments[1:], names))
    return f"{prefix}/providers/{path}"


def same_id(a: str, b: str) -> bool:
    """Resource ids compare case-insensitively, as in ARM."""
    return a.lower().rstrip("/") == b.lower().rstrip("/")
