"""Template parameters: the values a deployment supplies, checked against the declarations.

Values come in ARM's parameter-file shape (``{"name": {"value": ...}}``) or as plain values.
Errors name the parameter and the rule; they never show the value of a secure parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.localcloud.expressions import TemplateError, type_name

_TYPES: dict[str, type] = {
    "string": str,
    "securestring": str,
    "int": int,
    "bool": bool,
    "object": dict,
    "secureobject": dict,
    "array": list,
}


def _invalid(message: str) -> TemplateError:
    return TemplateError("InvalidTemplateDeployment", message)


def supplied_values(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"p": {"value": v}}`` or ``{"p": v}`` -> ``{"p": v}``."""
    values = {}
    for name, given in (parameters or {}).items():
        if isinstance(given, dict) and "reference" in given and "value" not in given:
            raise _invalid(f"parameter '{name}': Key Vault references are not supported by the local cloud")
        if isinstance(given, dict) and "value" in given and set(given) <= {"value", "metadata"}:
            given = given["value"]
        values[name] = given
    return values


def check_names(declared: Mapping[str, Any], supplied: Mapping[str, Any]) -> None:
    """Every supplied parameter is declared; every declaration without a default has a value."""
    known = {name.lower() for name in declared}
    unknown = [name for name in supplied if name.lower() not in known]
    if unknown:
        listed = ", ".join(f"'{name}'" for name in unknown)
        raise _invalid(f"the template has no parameter(s) {listed}; it declares: {', '.join(declared) or 'none'}")
    given = {name.lower() for name in supplied}
    missing = [
        name for name, declaration in declared.items()
        if name.lower() not in given and "defaultValue" not in _declaration(name, declaration)
    ]
    if missing:
        listed = ", ".join(f"'{name}'" for name in missing)
        raise _invalid(f"no value is given for the template parameter(s) {listed}")


def _declaration(name: str, declaration: Any) -> dict:
    if not isinstance(declaration, dict) or not isinstance(declaration.get("type"), str):
        raise TemplateError("InvalidTemplate", f"parameter '{name}' must be an object with a 'type'")
    if declaration["type"].lower() not in _TYPES:
        raise TemplateError(
            "InvalidTemplate", f"parameter '{name}' has type '{declaration['type']}', not one of {', '.join(_TYPES)}"
        )
    return declaration


def is_secure(declaration: Mapping[str, Any]) -> bool:
    return str(declaration.get("type", "")).lower().startswith("secure")


def check_value(name: str, declaration: Mapping[str, Any], value: Any) -> Any:
    """``value`` if it fits the declaration of parameter ``name``; else TemplateError."""
    kind = _declaration(name, declaration)["type"].lower()
    shown = "" if is_secure(declaration) else f" {_show(value)}"
    expected = _TYPES[kind]
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise _invalid(f"parameter '{name}' must be of type {declaration['type']}, got {type_name(value)}")
    allowed = declaration.get("allowedValues")
    if allowed is not None:
        items = value if kind == "array" else [value]
        if not all(any(type(item) is type(a) and item == a for a in allowed) for item in items):
            raise _invalid(
                f"parameter '{name}' value{shown} is not allowed; allowed values: "
                + ", ".join(_show(a) for a in allowed)
            )
    if kind == "int":
        low, high = declaration.get("minValue"), declaration.get("maxValue")
        if low is not None and value < low:
            raise _invalid(f"parameter '{name}' value{shown} is less than the minimum {low}")
        if high is not None and value > high:
            raise _invalid(f"parameter '{name}' value{shown} is greater than the maximum {high}")
    if kind in ("string", "securestring", "array"):
        low, high = declaration.get("minLength"), declaration.get("maxLength")
        if low is not None and len(value) < low:
            raise _invalid(f"parameter '{name}' is {len(value)} long, shorter than the minimum length {low}")
        if high is not None and len(value) > high:
            raise _invalid(f"parameter '{name}' is {len(value)} long, longer than the maximum length {high}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
