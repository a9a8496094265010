"""What-if: compare a planned resource with what was last deployed, in ARM's change shapes.

A resource is compared with the declaration it was last put with (not with its runtime
state, which holds read-only values a template never sets). Values the plan cannot know yet
(expressions over ``reference()``/``listKeys()``) are left out of the comparison.
"""

from __future__ import annotations

from typing import Any

from provisioner.localcloud.context import ResolvedResource


def change(resource: ResolvedResource, current: dict[str, Any] | None) -> dict[str, Any]:
    """One ``WhatIfChange``: Create, Modify (with ``delta``) or NoChange."""
    after = {"id": resource.id, "name": resource.name, "type": resource.type,
             "apiVersion": resource.api_version, **resource.body}
    if current is None:
        return {"resourceId": resource.id, "changeType": "Create", "after": after}
    delta = _delta("", current.get("declared") or {}, resource.body)
    return {"resourceId": resource.id, "changeType": "Modify" if delta else "NoChange",
            "before": current["resource"], "after": after, "delta": delta}


def deletion(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resourceId": resource["id"], "changeType": "Delete", "before": resource}


def _delta(path: str, before: Any, after: Any) -> list[dict[str, Any]]:
    if _unknown(after):
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in list(before) + [k for k in after if k not in before]:
            where = f"{path}.{key}" if path else key
            if key not in after:
                if not _empty(before[key]):
                    changes.append({"path": where, "propertyChangeType": "Delete", "before": before[key]})
            elif key not in before:
                if not _empty(after[key]) and not _unknown(after[key]):
                    changes.append({"path": where, "propertyChangeType": "Create", "after": after[key]})
            else:
                changes.extend(_delta(where, before[key], after[key]))
        return changes
    if before == after:
        return []
    return [{"path": path, "propertyChangeType": "Modify", "before": before, "after": after}]


def _unknown(value: Any) -> bool:
    """An expression the plan left unevaluated (ARM's what-if shows its text)."""
    return isinstance(value, str) and value.startswith("[") and value.endswith("]") and not value.startswith("[[")


def _empty(value: Any) -> bool:
    return value in (None, {}, [])
