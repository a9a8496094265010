"""The site's record of its distribution points (one row each in the state database)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from provisioner.errors import UsageError
from provisioner.site.state import State

# States a distribution point's deployment can be in, as recorded by the site.
DEPLOYING, SUCCEEDED, FAILED, DELETING = "Deploying", "Succeeded", "Failed", "Deleting"


@dataclass
class DistributionPointRecord:
    name: str
    target: str
    region: str
    resource_group: str
    storage_account: str
    site_name: str
    instances: int
    state: str = DEPLOYING
    fqdn: str | None = None
    error: str | None = None
    service_url: str | None = None
    blob_endpoint: str | None = None
    toolkit_version: str | None = None
    template_hash: str | None = None
    parameters: dict = field(default_factory=dict)
    stopped: bool = False

    @classmethod
    def from_row(cls, row) -> "DistributionPointRecord":
        names = {f.name for f in fields(cls)}
        values = {key: row[key] for key in row.keys() if key in names}
        values["parameters"] = json.loads(values.get("parameters") or "{}")
        values["stopped"] = bool(values.get("stopped"))
        return cls(**values)


def get(state: State, name: str) -> DistributionPointRecord | None:
    rows = state.query("SELECT * FROM distribution_points WHERE name = ?", (name,))
    return DistributionPointRecord.from_row(rows[0]) if rows else None


def require(state: State, name: str) -> DistributionPointRecord:
    record = get(state, name)
    if record is None:
        raise UsageError(f"unknown distribution point {name!r} (see `cdp status`)")
    return record


def all_records(state: State) -> list[DistributionPointRecord]:
    rows = state.query("SELECT * FROM distribution_points ORDER BY name")
    return [DistributionPointRecord.from_row(row) for row in rows]


def save(state: State, record: DistributionPointRecord) -> None:
    values = asdict(record)
    values["parameters"] = json.dumps(record.parameters, sort_keys=True)
    values["stopped"] = int(record.stopped)
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    updates = ", ".join(f"{key} = excluded.{key}" for key in values if key != "name")
    with state.tx() as db:
        db.execute(
            f"INSERT INTO distribution_points ({columns}) VALUES ({marks}) "
            f"ON CONFLICT(name) DO UPDATE SET {updates}, "
            "updated_at = strftime('%Y-%m-%dT%H:%M:%SZ','now')",
            tuple(values.values()),
        )


def delete(state: State, name: str) -> None:
    with state.tx() as db:
        db.execute("DELETE FROM distribution_points WHERE name = ?", (name,))
