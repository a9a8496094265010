"""Provision, plan (what-if), redeploy, scale and tear down a distribution point.

Everything here goes through :mod:`provisioner.arm` (the real Azure SDK clients), against
Azure or the local management endpoint alike. The site records each distribution point with
the toolkit version, template hash and parameters it was deployed with, so a stale deployment
is found by comparing them with what the current templates render.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from provisioner import __version__, arm, monitoring, templates
from provisioner.config import GB
from provisioner.errors import CdpError, UsageError
from provisioner.site import Site, records
from provisioner.site.records import DELETING, FAILED, SUCCEEDED, DistributionPointRecord

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def rg_deployment(name: str) -> str:
    return f"cdp-{name}-rg"


def dp_deployment(name: str) -> str:
    return f"cdp-{name}"


def app_settings(site: Site, name: str) -> dict[str, str]:
    """What the front end needs to know; never a secret. The template adds the storage account
    and its blob endpoint; the web app's managed identity gives it access to that storage."""
    from provisioner import tokens

    settings = {"CDP_DISTRIBUTION_POINT": name, "CDP_SITE_ID": site.site_id,
                "CDP_TOKEN_PUBLIC_KEY": tokens.public_key_pem(site)}
    cap = site.config.alerts.egress_hard_cap_gb
    if cap is not None:
        settings["CDP_EGRESS_HARD_CAP_BYTES"] = str(int(cap * GB))
    return settings


@dataclass
class Plan:
    """What a provision would do: the changes, and the rendered inputs it would deploy."""

    name: str
    target: str
    rendered: templates.Rendered
    changes: list[dict] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def as_dict(self) -> dict:
        return {"distribution_point": self.name, "target": self.target,
                "template_hash": self.rendered.template_hash, "changes": self.changes}


def deployed_parameters(rendered: templates.Rendered) -> dict:
    return {which: {k: v["value"] for k, v in rendered.parameters(which).items()}
            for which in templates.TEMPLATES}


def render_for(site: Site, name: str, region=None, instances=None, fqdn=None) -> templates.Rendered:
    spec = templates.Spec(name, region=region, instances=instances, fqdn=fqdn,
                          app_settings=app_settings(site, name))
    return templates.render(site, spec)


def plan(site: Site, conn: arm.Connection, record: DistributionPointRecord | None,
         rendered: templates.Rendered) -> Plan:
    """Compare what the site recorded (and Azure holds) with what would be deployed."""
    name = rendered.spec.name
    result = Plan(name, conn.target, rendered)
    names = rendered.names
    group = _resource_group(conn, names.resource_group)
    if group is None:
        result.changes.append({"action": "create", "type": "Microsoft.Resources/resourceGroups",
                               "name": names.resource_group})
        for resource in rendered.template(templates.DISTRIBUTION_POINT)["resources"]:
            result.changes.append({"action": "create", "type": resource["type"],
                                   "name": resource_name(resource, rendered)})
        return result
    _check_ours(site, group, names.resource_group)
    if record is None or record.state != SUCCEEDED or not _deployment_succeeded(conn, name, names):
        state = record.state if record else "not recorded"
        result.changes.append({"action": "deploy", "type": "Microsoft.Resources/deployments",
                               "name": dp_deployment(name), "reason": f"last state: {state}"})
        return result
    if record.template_hash != rendered.template_hash or record.toolkit_version != rendered.toolkit_version:
        result.changes.append({
            "action": "update", "type": "Microsoft.Resources/deployments", "name": dp_deployment(name),
            "reason": f"templates {record.template_hash} -> {rendered.template_hash}, "
                      f"toolkit {record.toolkit_version} -> {rendered.toolkit_version}"})
    wanted = deployed_parameters(rendered)
    for which, values in wanted.items():
        before = record.parameters.get(which, {})
        for key, value in values.items():
            if before.get(key) != value:
                result.changes.append({"action": "update", "parameter": key,
                                       "from": before.get(key), "to": value})
    return result


def provision(site: Site, name: str, target: str | None = None, region=None, instances=None,
              fqdn=None, what_if: bool = False, progress: Progress = _quiet) -> dict:
    """Provision ``name`` (or show the plan with ``what_if``); idempotent."""
    record = records.get(site.state, name)
    target = arm.check_target(target or (record.target if record else site.config.target))
    if record and record.target != target:
        raise UsageError(f"distribution point {name!r} already exists on target {record.target}")
    if record and instances is None:
        instances = record.instances
    if record and region is None:
        region = record.region
    if record and fqdn is None:
        fqdn = record.fqdn
    rendered = render_for(site, name, region, instances, fqdn)
    conn = arm.connect(site, target)
    the_plan = plan(site, conn, record, rendered)
    if what_if or the_plan.empty:
        return {"changed": False, "what_if": what_if, **the_plan.as_dict(),
                "record": _view(site, record) if record else None}
    record = _deploy(site, conn, rendered, record, progress)
    return {"changed": True, "what_if": False, **the_plan.as_dict(), "record": _view(site, record)}


def redeploy(site: Site, name: str, progress: Progress = _quiet, instances: int | None = None) -> dict:
    """Deploy ``name`` again with the current templates, keeping its declared instance count."""
    record = records.require(site.state, name)
    rendered = render_for(site, name, record.region,
                          instances if instances is not None else record.instances, record.fqdn)
    conn = arm.connect(site, record.target)
    group = _resource_group(conn, rendered.names.resource_group)
    if group is not None:
        _check_ours(site, group, rendered.names.resource_group)
    record = _deploy(site, conn, rendered, record, progress)
    return _view(site, record)


def scale(site: Site, name: str, instances: int, progress: Progress = _quiet) -> dict:
    templates.check_instances(instances)
    records.require(site.state, name)
    return redeploy(site, name, progress, instances=instances)


def ensure_current(site: Site, name: str, progress: Progress = _quiet) -> DistributionPointRecord:
    """Redeploy ``name`` first when its deployment is stale; return its record."""
    record = records.require(site.state, name)
    if record.state != SUCCEEDED or is_stale(site, record):
        progress(f"{name}: deployment is stale or failed; redeploying first")
        redeploy(site, name, progress)
        record = records.require(site.state, name)
    return record


def _deploy(site: Site, conn: arm.Connection, rendered: templates.Rendered,
            record: DistributionPointRecord | None, progress: Progress) -> DistributionPointRecord:
    spec, names = rendered.spec, rendered.names
    record = record or DistributionPointRecord(
        name=spec.name, target=conn.target, region=spec.region, resource_group=names.resource_group,
        storage_account=names.storage_account, site_name=names.site, instances=spec.instances)
    record.region, record.instances, record.fqdn = spec.region, spec.instances, spec.fqdn
    record.state, record.error = records.DEPLOYING, None
    records.save(site.state, record)
    try:
        progress(f"{spec.name}: deploying resource group {names.resource_group} ({conn.target})")
        conn.deployments.deployments.begin_create_or_update_at_subscription_scope(
            rg_deployment(spec.name),
            {"location": spec.region, "properties": {
                "mode": "Incremental",
                "template": rendered.template(templates.RESOURCE_GROUP),
                "parameters": rendered.parameters(templates.RESOURCE_GROUP)}},
        ).result()
        progress(f"{spec.name}: deploying storage and front end ({spec.instances} instances)")
        deployment = conn.deployments.deployments.begin_create_or_update(
            names.resource_group, dp_deployment(spec.name),
            {"properties": {
                "mode": "Incremental",
                "template": rendered.template(templates.DISTRIBUTION_POINT),
                "parameters": rendered.parameters(templates.DISTRIBUTION_POINT)}},
        ).result()
    except HttpResponseError as exc:
        record.state, record.error = FAILED, _arm_message(exc)
        records.save(site.state, record)
        raise CdpError(f"deployment of {spec.name} failed: {record.error}") from None
    except ServiceRequestError as exc:
        record.state, record.error = FAILED, f"cannot reach {conn.target} management endpoint"
        records.save(site.state, record)
        raise CdpError(f"deployment of {spec.name} failed: {record.error} ({exc})") from None
    outputs = {key: value.get("value") for key, value in (deployment.properties.outputs or {}).items()}
    record.state = SUCCEEDED
    record.service_url = f"https://{outputs['serviceHostName']}"
    record.blob_endpoint = outputs.get("blobEndpoint")
    record.storage_account = outputs.get("storageAccountName", names.storage_account)
    record.toolkit_version = rendered.toolkit_version
    record.template_hash = rendered.template_hash
    record.parameters = deployed_parameters(rendered)
    records.save(site.state, record)
    progress(f"{spec.name}: succeeded; front end {record.service_url}")
    return record


def teardown_plan(site: Site, name: str) -> dict:
    record = records.require(site.state, name)
    return {"distribution_point": name, "target": record.target,
            "delete": [{"type": "Microsoft.Resources/resourceGroups", "name": record.resource_group},
                       {"type": "Microsoft.Storage/storageAccounts", "name": record.storage_account},
                       {"type": "Microsoft.Web/sites", "name": record.site_name}]}


def teardown(site: Site, name: str, progress: Progress = _quiet) -> dict:
    """Delete the resource group of ``name`` if it bears our ownership tag; forget ``name``."""
    record = records.require(site.state, name)
    conn = arm.connect(site, record.target)
    group = _resource_group(conn, record.resource_group)
    if group is not None:
        _check_ours(site, group, record.resource_group)
        record.state = DELETING
        records.save(site.state, record)
        progress(f"{name}: deleting resource group {record.resource_group}")
        try:
            conn.resources.resource_groups.begin_delete(record.resource_group).result()
        except ResourceNotFoundError:
            pass
        except (HttpResponseError, ServiceRequestError) as exc:
            raise CdpError(f"teardown of {name} failed: {_arm_message(exc)}; run it again") from None
    records.delete(site.state, name)
    with site.state.tx() as db:  # its content went with its storage account
        db.execute("DELETE FROM placements WHERE distribution_point = ?", (name,))
    progress(f"{name}: deleted")
    return {"distribution_point": name, "deleted": record.resource_group}


def current_template_hash(site: Site) -> str:
    """The hash of the templates a deployment made now would use."""
    return templates.render_templates(
        site.config.templates_dir or templates.default_templates_dir()).template_hash


def is_stale(site: Site, record: DistributionPointRecord, current_hash: str | None = None) -> bool:
    """Whether ``record`` runs other templates or another toolkit version than the current ones."""
    current_hash = current_hash or current_template_hash(site)
    return record.template_hash != current_hash or record.toolkit_version != __version__


def status(site: Site, name: str | None = None) -> dict:
    rows = [records.require(site.state, name)] if name else records.all_records(site.state)
    current_hash = current_template_hash(site)  # rendered once, not once per distribution point
    return {"distribution_points": [_view(site, record, current_hash) for record in rows]}


def _view(site: Site, record: DistributionPointRecord, current_hash: str | None = None) -> dict:
    return {
        "name": record.name, "target": record.target, "state": record.state,
        "region": record.region, "resource_group": record.resource_group,
        "instances": record.instances, "storage_account": record.storage_account,
        "storage_sku": "Standard_LRS", "service_url": record.service_url,
        "blob_endpoint": record.blob_endpoint, "toolkit_version": record.toolkit_version,
        "template_hash": record.template_hash, "stale": is_stale(site, record, current_hash),
        "stopped": record.stopped, "error": record.error,
        "storage": monitoring.storage(site, record),
        "egress": monitoring.egress_of(site, record),
    }


def _resource_group(conn: arm.Connection, name: str):
    try:
        return conn.resources.resource_groups.get(name)
    except ResourceNotFoundError:
        return None
    except ServiceRequestError as exc:
        raise CdpError(f"cannot reach the {conn.target} management endpoint: {exc}") from None
    except HttpResponseError as exc:
        raise CdpError(f"cannot read resource group {name}: {_arm_message(exc)}") from None


def _check_ours(site: Site, group, name: str) -> None:
    owner = (group.tags or {}).get(templates.OWNER_TAG)
    if owner != site.site_id:
        raise CdpError(
            f"resource group {name} exists but does not bear this site's ownership tag "
            f"({templates.OWNER_TAG}); refusing to touch it")


def _deployment_succeeded(conn: arm.Connection, name: str, names) -> bool:
    try:
        found = conn.deployments.deployments.get(names.resource_group, dp_deployment(name))
    except ResourceNotFoundError:
        return False
    return (found.properties.provisioning_state or "") == SUCCEEDED


def resource_name(resource: dict, rendered: templates.Rendered) -> str:
    """The concrete name of a rendered template resource (its name is a parameter)."""
    if resource["type"] == "Microsoft.Resources/resourceGroups":
        return rendered.names.resource_group
    params = rendered.parameters(templates.DISTRIBUTION_POINT)
    by_type = {"Microsoft.Storage/storageAccounts": "storageAccountName",
               "Microsoft.Web/serverfarms": "planName", "Microsoft.Web/sites": "siteName"}
    key = by_type.get(resource["type"])
    return params[key]["value"] if key in params else resource["name"]


def _arm_message(exc: Exception) -> str:
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "message", None):
        details = [d.message for d in (getattr(error, "details", None) or []) if getattr(d, "message", None)]
        return "; ".join([error.message, *details])
    return str(getattr(exc, "message", None) or exc).splitlines()[0]
