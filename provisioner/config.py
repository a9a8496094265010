"""cdp.toml: loading and validation. An error names the file and the key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.errors import ConfigError, UsageError
from provisioner.names import check_name

TARGETS = ("local", "azure")
GB = 1000**3


@dataclass(frozen=True)
class Alerts:
    """Thresholds as in Configuration Manager: storage 2,000 GB, egress 10,000 GB a month,
    warning at 50 %, critical at 90 %."""

    storage_threshold_gb: float = 2000
    egress_threshold_gb: float = 10000
    warning_percent: float = 50
    critical_percent: float = 90
    egress_hard_cap_gb: float | None = None


@dataclass(frozen=True)
class BoundaryGroup:
    """Clients (glob patterns of client ids) and the distribution points that serve them,
    in priority order (``[boundary_groups.NAME]``)."""

    name: str
    clients: tuple[str, ...]
    distribution_points: tuple[str, ...]


@dataclass(frozen=True)
class ClientSettings:
    """``[clients]``: the seed's client setting "Allow access to cloud distribution points".

    Configuration Manager defaults it to No because its clients have on-premises distribution
    points to fall back on; every distribution point of this toolkit is a cloud one, so No
    would leave clients without any source. The default here is True; False is honoured:
    no access bundle is issued."""

    allow_cloud_distribution_points: bool = True


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    target: str = "local"
    region: str = "westeurope"
    subscription_id: str | None = None
    templates_dir: Path | None = None
    instances: int = 2
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    alerts: Alerts = field(default_factory=Alerts)
    boundary_groups: dict[str, BoundaryGroup] = field(default_factory=dict)
    clients: ClientSettings = field(default_factory=ClientSettings)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


# key -> (type or tuple of types, check or None, what the check wants)
def _positive(v):
    return v > 0


def _percent(v):
    return 0 < v <= 100


_TOP = {
    "target": (str, lambda v: v in TARGETS, f"one of {', '.join(TARGETS)}"),
    "region": (str, lambda v: bool(v.strip()), "a non-empty Azure region name"),
    "subscription_id": (str, lambda v: bool(v.strip()), "a non-empty subscription id"),
    "templates_dir": (str, lambda v: bool(v.strip()), "a folder path"),
    "instances": (int, lambda v: 1 <= v <= 30, "an integer from 1 to 30"),
}
_ALERTS = {
    "storage_threshold_gb": ((int, float), _positive, "a number greater than 0"),
    "egress_threshold_gb": ((int, float), _positive, "a number greater than 0"),
    "warning_percent": ((int, float), _percent, "a percentage from 0 to 100"),
    "critical_percent": ((int, float), _percent, "a percentage from 0 to 100"),
    "egress_hard_cap_gb": ((int, float), _positive, "a number greater than 0"),
}
# Sections that later parts of the toolkit read; their own modules validate their content.
_OPEN_SECTIONS = {"frontend"}


def _check(path: Path, key: str, value: Any, spec) -> Any:
    types, ok, wants = spec
    if isinstance(value, bool) or not isinstance(value, types) or not ok(value):
        raise ConfigError(path, key, f"must be {wants}, got {value!r}")
    return value


def parse(data: dict[str, Any], path: Path) -> Config:
    """Validate the parsed TOML ``data`` read from ``path``."""
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TOP:
            values[key] = _check(path, key, value, _TOP[key])
        elif key == "groups":
            values["groups"] = _parse_groups(path, value)
        elif key == "alerts":
            values["alerts"] = _parse_alerts(path, value)
        elif key == "boundary_groups":
            values["boundary_groups"] = _parse_boundary_groups(path, value)
        elif key == "clients":
            values["clients"] = _parse_clients(path, value)
        elif key in _OPEN_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(path, key, "must be a table")
        else:
            raise ConfigError(path, key, "unknown key")
    if "templates_dir" in values:
        tdir = Path(values["templates_dir"]).expanduser()
        if not tdir.is_absolute():
            tdir = path.parent / tdir
        if not tdir.is_dir():
            raise ConfigError(path, "templates_dir", f"folder {tdir} does not exist")
        values["templates_dir"] = tdir
    return Config(path=path, raw=data, **values)


def _parse_groups(path: Path, value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ConfigError(path, "groups", "must be a table of group = [distribution points]")
    groups = {}
    for name, members in value.items():
        key = f"groups.{name}"
        if not isinstance(members, list) or not members or not all(
            isinstance(m, str) and m for m in members
        ):
            raise ConfigError(path, key, "must be a non-empty list of distribution point names")
        groups[name] = tuple(members)
    return groups


def _parse_alerts(path: Path, value: Any) -> Alerts:
    if not isinstance(value, dict):
        raise ConfigError(path, "alerts", "must be a table")
    values = {}
    for key, item in value.items():
        if key not in _ALERTS:
            raise ConfigError(path, f"alerts.{key}", "unknown key")
        values[key] = float(_check(path, f"alerts.{key}", item, _ALERTS[key]))
    alerts = Alerts(**values)
    if alerts.warning_percent >= alerts.critical_percent:
        raise ConfigError(path, "alerts.warning_percent", "must be below alerts.critical_percent")
    return alerts


def _string_list(path: Path, key: str, value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(
        isinstance(item, str) and item.strip() for item in value
    ):
        raise ConfigError(path, key, f"must be a non-empty list of {what}")
    if len(set(value)) != len(value):
        raise ConfigError(path, key, "lists the same entry twice")
    return tuple(value)


def _parse_boundary_groups(path: Path, value: Any) -> dict[str, BoundaryGroup]:
    if not isinstance(value, dict):
        raise ConfigError(path, "boundary_groups", "must be a table of [boundary_groups.NAME] tables")
    groups = {}
    for name, table in value.items():  # file order: the order groups are consulted in
        key = f"boundary_groups.{name}"
        if not isinstance(table, dict):
            raise ConfigError(path, key, "must be a table with clients and distribution_points")
        for item in table:
            if item not in ("clients", "distribution_points"):
                raise ConfigError(path, f"{key}.{item}", "unknown key")
        for item in ("clients", "distribution_points"):
            if item not in table:
                raise ConfigError(path, f"{key}.{item}", "is missing")
        points = _string_list(path, f"{key}.distribution_points", table["distribution_points"],
                              "distribution point names, in priority order")
        for point in points:
            try:
                check_name(point)
            except UsageError as exc:
                raise ConfigError(path, f"{key}.distribution_points", str(exc)) from None
        groups[name] = BoundaryGroup(
            name, _string_list(path, f"{key}.clients", table["clients"], "client id patterns (globs)"), points
        )
    return groups


def _parse_clients(path: Path, value: Any) -> ClientSettings:
    if not isinstance(value, dict):
        raise ConfigError(path, "clients", "must be a table")
    values = {}
    for key, item in value.items():
        if key != "allow_cloud_distribution_points":
            raise ConfigError(path, f"clients.{key}", "unknown key")
        if not isinstance(item, bool):
            raise ConfigError(path, f"clients.{key}", f"must be true or false, got {item!r}")
        values[key] = item
    return ClientSettings(**values)


def load(path: Path) -> Config:
    """Load ``path``; a missing file is an empty configuration."""
    if not path.exists():
        return Config(path=path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not UTF-8 text") from None
    return parse(data, path)
