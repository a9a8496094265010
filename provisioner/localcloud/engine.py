"""The ARM template engine of the local management endpoint: plan and deploy a template.

A pure library: no HTTP and no emulator. The endpoint calls :func:`deploy` with a
:class:`ResourceProvider` that materialises each resource, or :func:`plan` (validate,
what-if) which calls nothing. Both:

1. check the template's shape and scope, and the parameters (types, allowed values, bounds;
   defaults may be expressions);
2. evaluate each resource's ``type``, ``name`` and ``apiVersion`` (nested child resources
   are flattened: type ``config`` under ``Microsoft.Web/sites`` named ``app`` becomes
   ``Microsoft.Web/sites/config`` named ``app/web``) and build its id;
3. resolve ``dependsOn`` (ids, names or ``type/name``) and the implicit dependencies of
   ``reference()``/``listKeys()`` on resources of the template, and sort topologically,
   keeping template order where the dependencies allow;
4. in that order, evaluate ``condition`` and the whole declaration, and (``deploy`` only)
   ``provider.put`` it, so that later ``reference()`` calls see its runtime state;
5. evaluate the outputs with their declared types.

Every failure is a :class:`TemplateError` with an ARM code and a message naming the
parameter, variable, resource, function or expression at fault.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

from provisioner.localcloud.context import (
    DeploymentScope,
    ResolvedResource,
    ResourceProvider,
    TemplateContext,
)
from provisioner.localcloud.expressions import (
    DEFERRED,
    ExpressionError,
    TemplateError,
    calls_in,
    compile_string,
    evaluate,
    type_name,
)
from provisioner.localcloud.resource_ids import resource_id

__all__ = [
    "DeploymentResult",
    "DeploymentScope",
    "Plan",
    "ResolvedResource",
    "ResourceProvider",
    "TemplateError",
    "deploy",
    "plan",
]

_TEMPLATE_ONLY = {"type", "name", "apiVersion", "condition", "dependsOn", "resources", "comments"}
_OUTPUT_TYPES = {
    "string": ("String", str),
    "securestring": ("SecureString", str),
    "int": ("Int", int),
    "bool": ("Bool", bool),
    "object": ("Object", dict),
    "secureobject": ("SecureObject", dict),
    "array": ("Array", list),
}


@dataclass(frozen=True)
class Plan:
    """What a deployment would do. Values that need deployed resources (``reference()``,
    ``listKeys()``) are left as their expression text, as ARM's what-if shows them."""

    resources: list[ResolvedResource]
    skipped: list[str]
    outputs: dict[str, dict]


@dataclass(frozen=True)
class DeploymentResult:
    """``outputs`` in ARM's shape (``{"name": {"type": "String", "value": ...}}``); the ids of
    the resources put, in order; the ids skipped because their condition was false."""

    outputs: dict[str, dict]
    resources: list[str]
    skipped: list[str]


@dataclass
class _Entry:
    where: str
    id: str
    type: str
    name: str
    api_version: str
    subscription_id: str
    resource_group: str | None
    declaration: dict
    depends_on: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.type} '{self.name}'"


def plan(template: Mapping[str, Any], parameters: Mapping[str, Any] | None, scope: DeploymentScope) -> Plan:
    """Evaluate ``template`` without deploying anything (the endpoint's validate and what-if)."""
    context, order = _prepare(template, parameters, scope, None)
    resources, skipped = [], []
    for entry in order:
        if _condition(context, entry) is False:
            context.index.skip(entry.id)
            skipped.append(entry.id)
            continue
        resources.append(_resolve(context, entry))
    return Plan(resources, skipped, _outputs(context))


def deploy(
    template: Mapping[str, Any],
    parameters: Mapping[str, Any] | None,
    scope: DeploymentScope,
    provider: ResourceProvider,
) -> DeploymentResult:
    """Deploy ``template``: put each resource through ``provider`` in dependency order."""
    context, order = _prepare(template, parameters, scope, provider)
    deployed, skipped = [], []
    with context.runtime():
        for entry in order:
            if _condition(context, entry) is False:
                context.index.skip(entry.id)
                skipped.append(entry.id)
                continue
            resource = _resolve(context, entry)
            try:
                state = provider.put(resource)
            except TemplateError as error:
                raise error.at(f"{entry.where} ({entry})") from None
            context.index.deployed(entry.id, state if state is not None else {})
            deployed.append(entry.id)
        outputs = _outputs(context)
    return DeploymentResult(outputs, deployed, skipped)


# --- preparation -------------------------------------------------------------------------

def _prepare(template, parameters, scope, provider) -> tuple[TemplateContext, list[_Entry]]:
    _check_shape(template, scope)
    context = TemplateContext(template, parameters, scope, provider)
    context.resolve_parameters()
    entries = list(_entries(context, template.get("resources", []), "resources", None))
    for entry in entries:
        context.index.add(entry.id, entry.type, entry.name)
    context.index.complete = True
    for entry in entries:
        entry.depends_on = _dependencies(context, entry)
    return context, _order(entries)


def _check_shape(template: Any, scope: DeploymentScope) -> None:
    def invalid(message: str) -> TemplateError:
        return TemplateError("InvalidTemplate", message)

    if not isinstance(template, Mapping):
        raise invalid("the template must be a JSON object")
    if not isinstance(template.get("resources", []), list):
        raise invalid("'resources' must be an array (symbolic-name templates are not supported)")
    if template.get("functions"):
        raise invalid("user-defined functions are not supported by the local cloud")
    for key in ("parameters", "variables", "outputs"):
        if not isinstance(template.get(key, {}), Mapping):
            raise invalid(f"'{key}' must be an object")
    schema = str(template.get("$schema", "")).lower()
    if "subscriptiondeploymenttemplate" in schema and scope.resource_group is not None:
        raise TemplateError(
            "InvalidTemplateDeployment", "a subscription-scope template cannot be deployed to a resource group"
        )
    if schema.endswith("/deploymenttemplate.json#") and scope.resource_group is None:
        raise TemplateError(
            "InvalidTemplateDeployment", "a resource-group template must be deployed to a resource group"
        )
    if "tenantdeploymenttemplate" in schema or "managementgroupdeploymenttemplate" in schema:
        raise invalid("tenant and management-group templates are not supported by the local cloud")


def _header(context: TemplateContext, declaration: dict, key: str, where: str) -> str:
    if key not in declaration:
        raise TemplateError("InvalidTemplate", f"{where}: the resource has no '{key}'")
    value = context.value(declaration[key], f"{where}.{key}")
    if value is DEFERRED:
        raise TemplateError("InvalidTemplate", f"{where}.{key}: must not use reference() or listKeys()")
    if not isinstance(value, str) or not value:
        raise TemplateError("InvalidTemplate", f"{where}.{key}: must be a non-empty string")
    return value


def _entries(context: TemplateContext, declarations: Any, where: str, parent: _Entry | None):
    if not isinstance(declarations, list):
        raise TemplateError("InvalidTemplate", f"{where}: must be an array")
    scope = context.scope
    for i, declaration in enumerate(declarations):
        at = f"{where}[{i}]"
        if not isinstance(declaration, dict):
            raise TemplateError("InvalidTemplate", f"{at}: a resource must be an object")
        if "copy" in declaration:
            raise TemplateError("InvalidTemplate", f"{at}: copy loops are not supported by the local cloud")
        kind = _header(context, declaration, "type", at)
        name = _header(context, declaration, "name", at)
        api_version = _header(context, declaration, "apiVersion", at)
        if parent is not None and "/" not in kind:  # a nested child: short type and name
            kind, name = f"{parent.type}/{kind}", f"{parent.name}/{name}"
        subscription = scope.subscription_id
        group = scope.resource_group
        if "subscriptionId" in declaration:
            subscription = _header(context, declaration, "subscriptionId", at)
        if "resourceGroup" in declaration:
            group = _header(context, declaration, "resourceGroup", at)
        try:
            rid = resource_id(subscription, group, kind, name.split("/"))
        except ExpressionError as error:
            raise error.at(at) from None
        body = {key: value for key, value in declaration.items() if key != "resources"}
        entry = _Entry(at, rid, kind, name, api_version, subscription, group, body)
        yield entry
        yield from _entries(context, declaration.get("resources", []), f"{at}.resources", entry)


def _dependencies(context: TemplateContext, entry: _Entry) -> list[str]:
    """The ids ``entry`` waits for: its ``dependsOn`` and what its reference()/listKeys() name."""
    explicit = entry.declaration.get("dependsOn", [])
    if not isinstance(explicit, list):
        raise TemplateError("InvalidTemplate", f"{entry.where}.dependsOn: must be an array")
    found = []
    for i, item in enumerate(explicit):
        where = f"{entry.where}.dependsOn[{i}]"
        ref = context.value(item, where)
        if not isinstance(ref, str) or not ref:
            raise TemplateError("InvalidTemplate", f"{where}: must be a resource name or id")
        rid = context.index.find(ref)
        if rid is None:
            raise TemplateError(
                "InvalidTemplate", f"{where}: {entry} depends on '{ref}', which is not a resource of this template"
            )
        found.append(rid)
    for where, text in _strings(entry.declaration, entry.where):
        if where.startswith(f"{entry.where}.dependsOn"):
            continue
        try:
            compiled = compile_string(text)
            if isinstance(compiled, str):
                continue
            for call in calls_in(compiled):
                if call.name.lower() in ("reference", "listkeys") and call.args:
                    ref = evaluate(call.args[0], context.functions)
                    rid = context.index.find(ref) if isinstance(ref, str) else None
                    if rid is not None:
                        found.append(rid)
        except TemplateError as error:
            raise error.in_expression(text).at(where) from None
    return list(dict.fromkeys(found))


def _strings(value: Any, where: str):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def _order(entries: list[_Entry]) -> list[_Entry]:
    """Dependencies first; otherwise template order."""
    by_key = {entry.id.lower(): entry for entry in entries}
    position = {key: i for i, key in enumerate(by_key)}
    sorter = TopologicalSorter({key: [d.lower() for d in e.depends_on] for key, e in by_key.items()})
    try:
        sorter.prepare()
    except CycleError as error:
        cycle = " -> ".join(str(by_key[key]) for key in error.args[1])
        raise TemplateError("InvalidTemplate", f"circular dependency between resources: {cycle}") from None
    order, ready = [], []
    while sorter.is_active():
        for key in sorter.get_ready():
            heapq.heappush(ready, (position[key], key))
        _, key = heapq.heappop(ready)
        order.append(by_key[key])
        sorter.done(key)
    return order


# --- evaluation -----------------------------------------------------------------------------

def _condition(context: TemplateContext, entry: _Entry) -> bool:
    """False only when the condition is known to be false (a deferred one counts as true)."""
    if "condition" not in entry.declaration:
        return True
    where = f"{entry.where}.condition"
    value = context.value(entry.declaration["condition"], where)
    if value is DEFERRED:
        return True
    if not isinstance(value, bool):
        raise TemplateError("InvalidTemplate", f"{where}: the condition of {entry} must be a bool")
    return value


def _resolve(context: TemplateContext, entry: _Entry) -> ResolvedResource:
    body = {
        key: context.evaluate(value, f"{entry.where}.{key}")
        for key, value in entry.declaration.items()
        if key not in _TEMPLATE_ONLY
    }
    return ResolvedResource(
        id=entry.id,
        type=entry.type,
        name=entry.name,
        api_version=entry.api_version,
        body=body,
        depends_on=tuple(entry.depends_on),
        subscription_id=entry.subscription_id,
        resource_group=entry.resource_group,
    )


def _outputs(context: TemplateContext) -> dict[str, dict]:
    outputs = {}
    for name, declaration in (context.template.get("outputs") or {}).items():
        where = f"outputs.{name}"
        kind = declaration.get("type") if isinstance(declaration, dict) else None
        if not isinstance(kind, str) or kind.lower() not in _OUTPUT_TYPES:
            raise TemplateError("InvalidTemplate", f"{where}: needs a 'type', one of {', '.join(_OUTPUT_TYPES)}")
        if "copy" in declaration or "value" not in declaration:
            raise TemplateError("InvalidTemplate", f"{where}: needs a 'value' (output copy loops are not supported)")
        if "condition" in declaration:
            condition = context.value(declaration["condition"], f"{where}.condition")
            if condition is False:
                continue
        arm_type, python_type = _OUTPUT_TYPES[kind.lower()]
        raw = declaration["value"]
        value = context.value(raw, f"{where}.value") if isinstance(raw, str) else context.evaluate(raw, f"{where}.value")
        if value is DEFERRED:
            value = raw
        elif not isinstance(value, python_type) or (python_type is int and isinstance(value, bool)):
            raise TemplateError(
                "InvalidTemplate", f"{where}: output '{name}' is declared {kind} but its value is {type_name(value)}"
            )
        outputs[name] = {"type": arm_type} if arm_type.startswith("Secure") else {"type": arm_type, "value": value}
    return outputs
