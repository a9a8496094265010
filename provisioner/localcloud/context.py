"""What a template is evaluated against: the scope, parameters, variables and resources.

:class:`TemplateContext` owns the functions bound to one deployment (``parameters``,
``variables``, ``resourceGroup``, ``subscription``, ``deployment``, ``resourceId``,
``reference``, ``listKeys`` ...) and evaluates template values with them. Parameters and
variables are evaluated lazily, once, with cycle detection. ``reference()`` and
``listKeys()`` answer from the resources this deployment has put (through the
:class:`ResourceProvider`), or from the provider for resources outside the template; while
the context is *deferring* (plan, or before resources exist) they yield ``DEFERRED``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from provisioner.localcloud import parameters as params
from provisioner.localcloud.expressions import (
    DEFERRED,
    ExpressionError,
    Function,
    TemplateError,
    evaluate_string,
)
from provisioner.localcloud.functions import BUILTINS
from provisioner.localcloud.resource_ids import RESOURCE_GROUP_TYPE, resource_id

AZURE_CLOUD: Mapping[str, Any] = {
    "name": "AzureCloud",
    "resourceManager": "https://management.azure.com/",
    "authentication": {"loginEndpoint": "https://login.microsoftonline.com/"},
    "suffixes": {"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net"},
}


@dataclass(frozen=True)
class DeploymentScope:
    """Where a deployment runs. ``resource_group`` None means a subscription-scope deployment."""

    subscription_id: str
    tenant_id: str
    location: str
    deployment_name: str
    resource_group: str | None = None
    resource_group_tags: Mapping[str, str] = field(default_factory=dict)
    subscription_name: str = "cdp local subscription"
    environment: Mapping[str, Any] = field(default_factory=lambda: AZURE_CLOUD)


@dataclass(frozen=True)
class ResolvedResource:
    """A resource of the template with every expression evaluated.

    ``body`` is the evaluated declaration (``location``, ``properties``, ``sku``, ``kind``,
    ``tags``, ``identity`` ...) without the template-only keys (``condition``,
    ``dependsOn``, nested ``resources``).
    """

    id: str
    type: str
    name: str
    api_version: str
    body: dict
    depends_on: tuple[str, ...]
    subscription_id: str
    resource_group: str | None

    @property
    def location(self) -> str | None:
        return self.body.get("location")

    @property
    def properties(self) -> dict:
        return self.body.get("properties") or {}


class ResourceProvider(Protocol):
    """What materialises resources; the local management endpoint supplies one."""

    def put(self, resource: ResolvedResource) -> dict:
        """Create or update ``resource``; return its runtime state (ARM resource JSON)."""

    def get(self, resource_id: str) -> dict | None:
        """The runtime state of an existing resource, or None."""

    def list_keys(self, resource_id: str, api_version: str) -> dict | None:
        """The ``listKeys`` answer for a resource, or None if it does not exist."""


class ResourceIndex:
    """The resources of the template: ids, names, and what has been deployed so far."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[str, str, str]] = {}  # lower id -> (id, type, name)
        self._states: dict[str, dict] = {}
        self._skipped: set[str] = set()
        self.complete = False  # every resource of the template is added

    def add(self, rid: str, resource_type: str, name: str) -> None:
        if rid.lower() in self._by_id:
            raise TemplateError("InvalidTemplate", f"resource '{rid}' is declared more than once")
        self._by_id[rid.lower()] = (rid, resource_type, name)

    def find(self, ref: str) -> str | None:
        """The id of the template resource ``ref`` names: an id, a name or ``type/name``."""
        if ref.startswith("/"):
            entry = self._by_id.get(ref.lower().rstrip("/"))
            return entry[0] if entry else None
        matches = [
            rid for rid, kind, name in self._by_id.values()
            if ref.lower() in (name.lower(), f"{kind}/{name}".lower())
        ]
        if len(matches) > 1:
            raise TemplateError(
                "InvalidTemplate", f"'{ref}' names {len(matches)} resources of the template; use resourceId()"
            )
        return matches[0] if matches else None

    def deployed(self, rid: str, state: dict) -> None:
        self._states[rid.lower()] = state

    def skip(self, rid: str) -> None:
        self._skipped.add(rid.lower())

    def state(self, function: str, ref: str, rid: str) -> dict:
        if rid.lower() in self._skipped:
            raise TemplateError(
                "InvalidTemplate", f"{function}('{ref}'): resource '{rid}' is not deployed: its condition is false"
            )
        state = self._states.get(rid.lower())
        if state is None:
            raise TemplateError(
                "InvalidTemplate",
                f"{function}('{ref}'): resource '{rid}' of this template is not deployed yet (add it to dependsOn)",
            )
        return state


class TemplateContext:
    def __init__(
        self,
        template: Mapping[str, Any],
        parameters: Mapping[str, Any] | None,
        scope: DeploymentScope,
        provider: ResourceProvider | None = None,
    ):
        self.template = template
        self.scope = scope
        self.provider = provider
        self.index = ResourceIndex()
        self.deferring = True
        self._declared = {name.lower(): (name, d) for name, d in (template.get("parameters") or {}).items()}
        self._supplied = {name.lower(): v for name, v in params.supplied_values(parameters).items()}
        self._variables = {name.lower(): (name, v) for name, v in (template.get("variables") or {}).items()}
        self._parameter_values: dict[str, Any] = {}
        self._variable_values: dict[str, Any] = {}
        self._resolving: list[str] = []
        own = [
            Function("parameters", self._parameters, 1, 1),
            Function("variables", self._variables_fn, 1, 1),
            Function("resourceGroup", self._resource_group, 0, 0),
            Function("subscription", self._subscription, 0, 0),
            Function("deployment", self._deployment, 0, 0),
            Function("environment", lambda args: dict(self.scope.environment), 0, 0),
            Function("resourceId", self._resource_id, 2),
            Function("subscriptionResourceId", self._subscription_resource_id, 2),
            Function("tenantResourceId", self._tenant_resource_id, 2),
            Function("reference", self._reference, 1, 3),
            Function("listKeys", self._list_keys, 2, 2),
        ]
        self.functions = {**BUILTINS, **{f.name.lower(): f for f in own}}

    # --- evaluation ---------------------------------------------------------------------

    @contextmanager
    def runtime(self) -> Iterator[None]:
        """Within: ``reference()``/``listKeys()`` read real resources instead of deferring."""
        self.deferring = False
        try:
            yield
        finally:
            self.deferring = True

    def value(self, value: Any, where: str) -> Any:
        """The value of one template string (may be ``DEFERRED``); other values as they are."""
        if not isinstance(value, str):
            return value
        try:
            return evaluate_string(value, self.functions)
        except TemplateError as error:
            raise error.at(where) from None

    def evaluate(self, value: Any, where: str) -> Any:
        """Every string in ``value`` evaluated; a deferred one keeps its expression text."""
        if isinstance(value, dict):
            return {key: self.evaluate(item, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, list):
            return [self.evaluate(item, f"{where}[{i}]") for i, item in enumerate(value)]
        result = self.value(value, where)
        return value if result is DEFERRED else result

    @contextmanager
    def _resolving_as(self, label: str) -> Iterator[None]:
        if label in self._resolving:
            chain = " -> ".join(self._resolving[self._resolving.index(label) :] + [label])
            raise TemplateError("InvalidTemplate", f"circular reference: {chain}")
        self._resolving.append(label)
        try:
            yield
        finally:
            self._resolving.pop()

    # --- parameters and variables ----------------------------------------------------------

    def resolve_parameters(self) -> dict[str, Any]:
        """Check and evaluate every parameter (declared name -> value)."""
        params.check_names(dict(self._declared.values()), self._supplied)
        return {name: self.parameter(name) for name, _ in self._declared.values()}

    def parameter(self, name: str) -> Any:
        key = name.lower()
        if key in self._parameter_values:
            return self._parameter_values[key]
        if key not in self._declared:
            raise ExpressionError.of(f"the template has no parameter '{name}'")
        declared_name, declaration = self._declared[key]
        if key in self._supplied:
            value = self._supplied[key]
        else:
            default = declaration.get("defaultValue")
            with self._resolving_as(f"parameters('{declared_name}')"):
                value = self.evaluate(default, f"parameters.{declared_name}.defaultValue")
        self._parameter_values[key] = params.check_value(declared_name, declaration, value)
        return self._parameter_values[key]

    def variable(self, name: str) -> Any:
        key = name.lower()
        if key in self._variable_values:
            return self._variable_values[key]
        if key not in self._variables:
            raise ExpressionError.of(f"the template has no variable '{name}'")
        declared_name, declaration = self._variables[key]
        if key == "copy":
            raise TemplateError("InvalidTemplate", "variable copy loops are not supported by the local cloud")
        with self._resolving_as(f"variables('{declared_name}')"):
            value = self.evaluate(declaration, f"variables.{declared_name}")
        self._variable_values[key] = value
        return value

    def _parameters(self, args: list) -> Any:
        return self.parameter(_name("parameters", args[0]))

    def _variables_fn(self, args: list) -> Any:
        return self.variable(_name("variables", args[0]))

    # --- scope -------------------------------------------------------------------------------

    def _resource_group(self, args: list) -> dict:
        scope = self.scope
        if scope.resource_group is None:
            raise ExpressionError.of("resourceGroup() is not available in a subscription-scope deployment")
        return {
            "id": f"/subscriptions/{scope.subscription_id}/resourceGroups/{scope.resource_group}",
            "name": scope.resource_group,
            "type": RESOURCE_GROUP_TYPE,
            "location": scope.location,
            "tags": dict(scope.resource_group_tags),
            "properties": {"provisioningState": "Succeeded"},
        }

    def _subscription(self, args: list) -> dict:
        return {
            "id": f"/subscriptions/{self.scope.subscription_id}",
            "subscriptionId": self.scope.subscription_id,
            "tenantId": self.scope.tenant_id,
            "displayName": self.scope.subscription_name,
        }

    def _deployment(self, args: list) -> dict:
        template = {k: self.template[k] for k in ("$schema", "contentVersion", "metadata") if k in self.template}
        result = {
            "name": self.scope.deployment_name,
            "properties": {"template": template, "mode": "Incremental", "provisioningState": "Running"},
        }
        if self.scope.resource_group is None:
            result["location"] = self.scope.location
        return result

    def _resource_id(self, args: list) -> str:
        """``resourceId([subscriptionId], [resourceGroupName], type, name1, name2...)``."""
        texts = [_name("resourceId", a) for a in args]
        at = _type_position("resourceId", texts, 2)
        subscription, group = self.scope.subscription_id, self.scope.resource_group
        if at == 1:
            group = texts[0]
        elif at == 2:
            subscription, group = texts[0], texts[1]
        return resource_id(subscription, group, texts[at], _names(texts[at + 1 :]))

    def _subscription_resource_id(self, args: list) -> str:
        texts = [_name("subscriptionResourceId", a) for a in args]
        at = _type_position("subscriptionResourceId", texts, 1)
        subscription = texts[0] if at == 1 else self.scope.subscription_id
        return resource_id(subscription, None, texts[at], _names(texts[at + 1 :]))

    def _tenant_resource_id(self, args: list) -> str:
        texts = [_name("tenantResourceId", a) for a in args]
        _type_position("tenantResourceId", texts, 0)
        return resource_id(None, None, texts[0], _names(texts[1:]))

    # --- reference and listKeys ------------------------------------------------------------------

    def _target(self, function: str, ref: str) -> tuple[str, bool] | None:
        """The id ``ref`` names and whether the resource belongs to this template; None while
        the resources of the template are not all known yet."""
        if self._resolving:
            raise TemplateError(
                "InvalidTemplate",
                f"{function}() cannot be used in {self._resolving[-1]} (only in resources and outputs)",
            )
        if not self.index.complete:
            return None
        found = self.index.find(ref)
        if found:
            return found, True
        if not ref.startswith("/"):
            raise TemplateError("ResourceNotFound", f"{function}('{ref}'): no resource named '{ref}' in the template")
        return ref, False

    def _reference(self, args: list) -> Any:
        ref = _name("reference", args[0])
        full = len(args) == 3
        if full and str(args[2]).lower() != "full":
            raise ExpressionError.of(f"the third argument of reference() must be 'Full', got '{args[2]}'")
        target = self._target("reference", ref)
        if target is None or self.deferring:
            return DEFERRED
        rid, in_template = target
        if in_template:
            state = self.index.state("reference", ref, rid)
        else:
            state = self.provider.get(rid) if self.provider else None
            if state is None:
                raise TemplateError("ResourceNotFound", f"reference('{ref}'): resource '{rid}' not found")
        return state if full else state.get("properties", {})

    def _list_keys(self, args: list) -> Any:
        ref, api_version = _name("listKeys", args[0]), _name("listKeys", args[1])
        target = self._target("listKeys", ref)
        if target is None or self.deferring:
            return DEFERRED
        rid, in_template = target
        if in_template:
            self.index.state("listKeys", ref, rid)
        keys = self.provider.list_keys(rid, api_version) if self.provider else None
        if keys is None:
            raise TemplateError("ResourceNotFound", f"listKeys('{ref}'): resource '{rid}' not found")
        return keys


def _name(function: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ExpressionError.of(f"function '{function}' expects string arguments")
    return value


def _type_position(function: str, texts: list[str], max_before: int) -> int:
    """Where the resource type is among the arguments (the first one with a '/')."""
    at = next((i for i, text in enumerate(texts) if "/" in text), None)
    if at is None or at > max_before:
        raise ExpressionError.of(f"{function}() needs a resource type like 'Microsoft.Web/sites' and its name(s)")
    if at == len(texts) - 1:
        raise ExpressionError.of(f"{function}() got the resource type '{texts[at]}' but no name")
    return at


def _names(texts: list[str]) -> list[str]:
    return [segment for text in texts for segment in text.split("/")]
