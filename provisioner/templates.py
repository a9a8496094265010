"""The ARM templates of a distribution point: Jinja rendering, parameter files, template hash.

Jinja renders only what belongs to a toolkit version (apiVersions, the toolkit version, the
template hash). Everything that differs between distribution points (names, region, instance
count, tags, app settings, host name) is an ARM parameter in the parameter files. So the two
rendered templates are the same for every distribution point of one toolkit version and
template set, and ``template_hash`` names exactly that pair: a deployment whose hash differs
from the current one is stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2

import provisioner
from provisioner.errors import CdpError, UsageError
from provisioner.names import AzureNames, check_name

RESOURCE_GROUP = "resource-group"
DISTRIBUTION_POINT = "distribution-point"
TEMPLATES = (RESOURCE_GROUP, DISTRIBUTION_POINT)

# Stable (non-preview) apiVersions, pinned per toolkit version.
API_VERSIONS = {
    "resource_groups": "2022-09-01",
    "storage": "2023-05-01",
    "web": "2024-04-01",
    "authorization": "2022-04-01",
}
PARAMETERS_SCHEMA = {
    RESOURCE_GROUP: "https://schema.management.azure.com/schemas/2018-05-01/subscriptionDeploymentParameters.json#",
    DISTRIBUTION_POINT: "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
}

OWNER_TAG = "cdp-owner"
NAME_TAG = "cdp-distribution-point"
VERSION_TAG = "cdp-toolkit-version"
HASH_TAG = "cdp-template-hash"

MIN_INSTANCES, MAX_INSTANCES = 1, 30
_REGION = re.compile(r"^[A-Za-z][A-Za-z0-9 ]*[A-Za-z0-9]$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SETTING = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def default_templates_dir() -> Path:
    return Path(provisioner.__file__).resolve().parents[1] / "templates"


def content_version(version: str = provisioner.__version__) -> str:
    """ARM's contentVersion (four numbers) of a toolkit version: 0.1.0 -> 0.1.0.0."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    parts = match.group(0).split(".") if match else ["0"]
    return ".".join((parts + ["0"] * 4)[:4])


# --- what is rendered -------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What the administrator asks for; ``None`` means the site's default from cdp.toml."""

    name: str
    region: str | None = None
    instances: int | None = None
    fqdn: str | None = None
    app_settings: Mapping[str, str] = field(default_factory=dict)

    def checked(self) -> Spec:
        """Validate the values given; raise UsageError naming the rule. Writes nothing."""
        check_name(self.name)
        if self.region is not None:
            check_region(self.region)
        if self.instances is not None:
            check_instances(self.instances)
        fqdn = check_fqdn(self.fqdn) if self.fqdn else None
        check_app_settings(self.app_settings)
        return replace(self, fqdn=fqdn, app_settings=dict(self.app_settings))

    def resolved(self, config) -> Spec:
        """The checked spec with the site defaults filled in."""
        spec = self.checked()
        region = spec.region if spec.region is not None else config.region
        instances = spec.instances if spec.instances is not None else config.instances
        return replace(spec, region=check_region(region), instances=check_instances(instances))


def check_region(region: str) -> str:
    if not isinstance(region, str) or not _REGION.match(region):
        raise UsageError(f"invalid region {region!r}: an Azure region name such as westeurope")
    return region


def check_instances(instances: int) -> int:
    if isinstance(instances, bool) or not isinstance(instances, int) or not (
        MIN_INSTANCES <= instances <= MAX_INSTANCES
    ):
        raise UsageError(
            f"invalid instance count {instances!r}: "
            f"an integer from {MIN_INSTANCES} to {MAX_INSTANCES}"
        )
    return instances


def check_fqdn(fqdn: str) -> str:
    """Return ``fqdn`` lower-cased if it is a DNS host name with at least two labels."""
    name = fqdn.lower().removesuffix(".") if isinstance(fqdn, str) else ""
    labels = name.split(".")
    if (
        len(name) > 253
        or len(labels) < 2
        or not all(_DNS_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise UsageError(
            f"invalid fqdn {fqdn!r}: a DNS host name such as cdp.example.com "
            "(labels of letters, digits and inner hyphens, at most 63 characters each)"
        )
    return name


def check_app_settings(settings: Mapping[str, str]) -> None:
    for key, value in settings.items():
        if not isinstance(key, str) or not _SETTING.match(key):
            raise UsageError(f"invalid app setting name {key!r}: letters, digits and underscores")
        if not isinstance(value, str):
            raise UsageError(f"app setting {key} must be a string, got {type(value).__name__}")


@dataclass(frozen=True)
class Rendered:
    """The templates and parameter files one provision of ``spec`` deploys."""

    spec: Spec
    names: AzureNames
    toolkit_version: str
    template_hash: str
    files: dict[str, dict[str, Any]]

    def template(self, which: str) -> dict[str, Any]:
        return self.files[f"{which}.json"]

    def parameters(self, which: str) -> dict[str, Any]:
        """The ``parameters`` object of a parameter file, as the deployment API takes it."""
        return self.files[f"{which}.parameters.json"]["parameters"]

    def write(self, out_dir: Path) -> list[Path]:
        """Write every file as pretty JSON into ``out_dir`` (created if needed)."""
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"{out_dir} exists and is not a folder")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            paths = []
            for file_name, document in self.files.items():
                path = out_dir / file_name
                tmp = path.with_name(f".{file_name}.tmp")
                tmp.write_text(dumps(document), encoding="utf-8")
                os.replace(tmp, path)
                paths.append(path)
        except OSError as exc:
            raise CdpError(f"cannot write to {out_dir}: {exc.strerror or exc}") from None
        return paths


def dumps(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# --- rendering --------------------------------------------------------------------------------


def render(site, spec: Spec) -> Rendered:
    """Render the templates and parameter files for ``spec`` on ``site``.

    Everything is validated before the site is touched; a bad value raises UsageError.
    """
    spec = spec.resolved(site.config)
    templates_dir = site.config.templates_dir or default_templates_dir()
    version = provisioner.__version__
    templates = render_templates(templates_dir, version)
    names = AzureNames.derive(spec.name, site.site_id)
    files: dict[str, dict[str, Any]] = {}
    for which in TEMPLATES:
        files[f"{which}.json"] = templates.documents[which]
        values = _parameter_values(which, spec, names, site.site_id)
        files[f"{which}.parameters.json"] = _parameter_file(which, values)
    return Rendered(spec, names, version, templates.template_hash, files)


@dataclass(frozen=True)
class Templates:
    template_hash: str
    documents: dict[str, dict[str, Any]]


def render_templates(templates_dir: Path, version: str = provisioner.__version__) -> Templates:
    """Render both templates of one toolkit version and compute their hash.

    The hash is the sha256 of the canonical JSON of both templates rendered with an empty
    hash; the templates are then rendered again with the hash filled in.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["tojson"] = _tojson
    context = {
        "toolkit_version": version,
        "content_version": content_version(version),
        "api": dict(API_VERSIONS),
    }
    unhashed = {
        which: _render_one(env, templates_dir, which, {**context, "template_hash": ""})
        for which in TEMPLATES
    }
    canonical = json.dumps(unhashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    template_hash = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
    documents = {
        which: _render_one(env, templates_dir, which, {**context, "template_hash": template_hash})
        for which in TEMPLATES
    }
    return Templates(template_hash, documents)


def _tojson(value: Any) -> str:
    """JSON of ``value``; an undefined value is an error (Jinja's own filter would hide it)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return json.dumps(value, ensure_ascii=False)


def _render_one(env: jinja2.Environment, templates_dir: Path, which: str, context: dict
                ) -> dict[str, Any]:
    file_name = f"{which}.json.j2"
    where = Path(templates_dir) / file_name
    try:
        text = env.get_template(file_name).render(**context)
    except jinja2.TemplateNotFound:
        raise CdpError(f"template {where} not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise CdpError(f"template {where}, line {exc.lineno}: {exc.message}") from None
    except jinja2.TemplateError as exc:  # UndefinedError and every other render error
        raise CdpError(f"template {where}: {exc.message or exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CdpError(
            f"template {where} does not render to JSON: "
            f"line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(document, dict) or "resources" not in document:
        raise CdpError(f"template {where} does not render to an ARM template (no resources)")
    return document


def _parameter_values(which: str, spec: Spec, names: AzureNames, site_id: str) -> dict[str, Any]:
    tags = {OWNER_TAG: site_id, NAME_TAG: spec.name}
    if which == RESOURCE_GROUP:
        return {"resourceGroupName": names.resource_group, "location": spec.region, "tags": tags}
    return {
        "location": spec.region,
        "instances": spec.instances,
        "storageAccountName": names.storage_account,
        "planName": names.plan,
        "siteName": names.site,
        "tags": tags,
        "appSettings": [{"name": k, "value": v} for k, v in sorted(spec.app_settings.items())],
        "fqdn": spec.fqdn or "",
    }


def _parameter_file(which: str, values: dict[str, Any]) -> dict[str, Any]:
    return {
        "$schema": PARAMETERS_SCHEMA[which],
        "contentVersion": content_version(),
        "parameters": {key: {"value": value} for key, value in values.items()},
    }
