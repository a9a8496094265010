"""Rendering of the ARM templates and parameter files, and ``cdp render``.

Golden files: ``tests/golden/*.json`` are the rendered files of distribution point ``dp1`` on a
site with a fixed id. After an intended change of the templates, regenerate them with
``CDP_UPDATE_GOLDEN=1 pytest tests/test_templates.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

import provisioner
from provisioner import deploy, templates
from provisioner.errors import CdpError, UsageError
from provisioner.names import MAX_NAME
from provisioner.site import Site

GOLDEN = Path(__file__).parent / "golden"
SITE_ID = "0123456789abcdef"
FILES = [
    "resource-group.json",
    "resource-group.parameters.json",
    "distribution-point.json",
    "distribution-point.parameters.json",
]
CONTENT_VERSION = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
STORAGE_NAME = re.compile(r"^[a-z0-9]{3,24}$")


def make_site(home: Path, config: str | None = None) -> Site:
    home.mkdir(parents=True, exist_ok=True)
    (home / "site.id").write_text(SITE_ID + "\n")
    if config is not None:
        (home / "cdp.toml").write_text(config)
    return Site.open(home)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path / "site")


def resource(document: dict, type_: str) -> dict:
    (found,) = [r for r in document["resources"] if r["type"] == type_]
    return found


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def copy_templates(to: Path) -> Path:
    shutil.copytree(templates.default_templates_dir(), to)
    return to


# --- golden files -----------------------------------------------------------------------------


def test_rendered_files_match_golden_files(site, tmp_path):
    spec = templates.Spec("dp1", app_settings={"CDP_DISTRIBUTION_POINT": "dp1"})
    paths = templates.render(site, spec).write(tmp_path / "out")
    assert [p.name for p in paths] == FILES
    if os.environ.get("CDP_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        for path in paths:
            shutil.copyfile(path, GOLDEN / path.name)
    for path in paths:
        golden = GOLDEN / path.name
        assert golden.exists(), f"{golden} is missing; run with CDP_UPDATE_GOLDEN=1"
        assert path.read_text() == golden.read_text(), (
            f"{path.name} differs from {golden}; if the change is intended, "
            "regenerate with CDP_UPDATE_GOLDEN=1 and review the diff"
        )


# --- what the templates say -------------------------------------------------------------------


def test_distribution_point_template_has_the_mission_properties(site):
    rendered = templates.render(site, templates.Spec("dp1"))
    dp = rendered.template(templates.DISTRIBUTION_POINT)
    assert dp["$schema"].endswith("/2019-04-01/deploymentTemplate.json#")
    storage = resource(dp, "Microsoft.Storage/storageAccounts")
    assert storage["sku"] == {"name": "Standard_LRS"}
    assert storage["kind"] == "StorageV2"
    assert storage["properties"]["supportsHttpsTrafficOnly"] is True
    assert storage["properties"]["minimumTlsVersion"] == "TLS1_2"
    assert storage["properties"]["allowBlobPublicAccess"] is False
    plan = resource(dp, "Microsoft.Web/serverfarms")
    assert plan["sku"]["capacity"] == "[parameters('instances')]"
    assert dp["parameters"]["instances"]["defaultValue"] == 2
    web = resource(dp, "Microsoft.Web/sites")
    assert web["kind"] == "app,linux"
    assert web["identity"] == {"type": "SystemAssigned"}
    assert web["properties"]["httpsOnly"] is True
    config = web["properties"]["siteConfig"]
    assert config["minTlsVersion"] == "1.2"
    assert config["healthCheckPath"] == "/health"
    assert config["linuxFxVersion"] == "PYTHON|3.11"
    # The administrator's settings, plus the storage account and its blob endpoint from the
    # deployed account (the front end reaches it with the web app's managed identity).
    assert config["appSettings"].startswith("[concat(parameters('appSettings'), createArray(")
    assert "'CDP_STORAGE_ACCOUNT'" in config["appSettings"]
    assert "reference(variables('storageId')).primaryEndpoints.blob" in config["appSettings"]
    outputs = {"serviceHostName", "blobEndpoint", "storageAccountName", "instances"}
    assert outputs <= set(dp["outputs"])
    for res in dp["resources"]:
        assert not res["apiVersion"].endswith("-preview"), res["type"]


def test_resource_group_template_creates_the_group_with_tags(site):
    rendered = templates.render(site, templates.Spec("dp1"))
    rg = rendered.template(templates.RESOURCE_GROUP)
    assert rg["$schema"].endswith("/2018-05-01/subscriptionDeploymentTemplate.json#")
    group = resource(rg, "Microsoft.Resources/resourceGroups")
    assert group["name"] == "[parameters('resourceGroupName')]"
    assert group["tags"] == "[union(parameters('tags'), variables('toolkitTags'))]"
    assert rg["variables"]["toolkitTags"] == {
        templates.VERSION_TAG: provisioner.__version__,
        templates.HASH_TAG: rendered.template_hash,
    }
    params = rendered.parameters(templates.RESOURCE_GROUP)
    assert params["resourceGroupName"]["value"] == rendered.names.resource_group
    assert params["tags"]["value"] == {templates.OWNER_TAG: SITE_ID, templates.NAME_TAG: "dp1"}


def test_every_resource_carries_the_toolkit_tags(site):
    rendered = templates.render(site, templates.Spec("dp1"))
    dp = rendered.template(templates.DISTRIBUTION_POINT)
    assert dp["variables"]["toolkitTags"][templates.HASH_TAG] == rendered.template_hash
    for res in dp["resources"]:
        if res["type"] == "Microsoft.Authorization/roleAssignments":
            continue  # an extension resource: ARM takes no tags on it
        assert res["tags"] == "[variables('tags')]", res["type"]


def test_content_version_and_hash(site):
    rendered = templates.render(site, templates.Spec("dp1"))
    assert re.fullmatch(r"[0-9a-f]{16}", rendered.template_hash)
    for which in templates.TEMPLATES:
        document = rendered.template(which)
        assert CONTENT_VERSION.match(document["contentVersion"])
        assert document["metadata"]["cdp"] == {
            "toolkitVersion": provisioner.__version__,
            "templateHash": rendered.template_hash,
        }
    assert templates.content_version("0.1.0") == "0.1.0.0"
    assert templates.content_version("2.1") == "2.1.0.0"
    assert templates.content_version("1.2.3rc1") == "1.2.3.0"
    assert templates.content_version("1.2.3.4.5") == "1.2.3.4"


def test_templates_are_the_same_for_every_distribution_point(site, tmp_path):
    a = templates.render(site, templates.Spec("dp1"))
    b = templates.render(site, templates.Spec("other-dp", region="northeurope", instances=7,
                                              fqdn="cdp.example.com", app_settings={"X": "1"}))
    assert a.template_hash == b.template_hash
    for which in templates.TEMPLATES:
        assert a.template(which) == b.template(which)
        assert a.parameters(which) != b.parameters(which)
    params = b.parameters(templates.DISTRIBUTION_POINT)
    assert params["instances"]["value"] == 7
    assert params["location"]["value"] == "northeurope"
    assert params["fqdn"]["value"] == "cdp.example.com"
    assert params["appSettings"]["value"] == [{"name": "X", "value": "1"}]
    # Rendering twice gives the same bytes.
    one, two = tmp_path / "one", tmp_path / "two"
    a.write(one)
    templates.render(site, templates.Spec("dp1")).write(two)
    for name in FILES:
        assert (one / name).read_bytes() == (two / name).read_bytes()


def test_site_defaults_come_from_cdp_toml(tmp_path):
    site = make_site(tmp_path / "site", 'region = "swedencentral"\ninstances = 3\n')
    params = templates.render(site, templates.Spec("dp1")).parameters(templates.DISTRIBUTION_POINT)
    assert params["location"]["value"] == "swedencentral"
    assert params["instances"]["value"] == 3


# --- user templates and render errors ---------------------------------------------------------


def test_templates_dir_from_cdp_toml_is_used_and_changes_the_hash(tmp_path, site):
    own = copy_templates(tmp_path / "own-templates")
    edit(own / "distribution-point.json.j2", "One cloud distribution point", "Our point")
    custom = make_site(tmp_path / "custom", f'templates_dir = "{own}"\n')
    rendered = templates.render(custom, templates.Spec("dp1"))
    description = rendered.template(templates.DISTRIBUTION_POINT)["metadata"]["description"]
    assert description.startswith("Our")
    assert rendered.template_hash != templates.render(site, templates.Spec("dp1")).template_hash


def test_missing_jinja_variable_names_the_template(tmp_path):
    own = copy_templates(tmp_path / "own-templates")
    path = own / "resource-group.json.j2"
    edit(path, "{{ content_version | tojson }}", "{{ no_such_value | tojson }}")
    site = make_site(tmp_path / "site", f'templates_dir = "{own}"\n')
    with pytest.raises(CdpError) as err:
        templates.render(site, templates.Spec("dp1"))
    assert str(path) in str(err.value)
    assert "no_such_value" in str(err.value)


def test_template_that_is_not_json_names_the_template(tmp_path):
    own = copy_templates(tmp_path / "own-templates")
    path = own / "distribution-point.json.j2"
    edit(path, '"resources": [', '"resources": [,')
    site = make_site(tmp_path / "site", f'templates_dir = "{own}"\n')
    with pytest.raises(CdpError, match=re.escape(str(path)) + ".*JSON"):
        templates.render(site, templates.Spec("dp1"))


# --- names and input rules --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a" * MAX_NAME, "a-b-c-d-e-f-g-h", "z9" * (MAX_NAME // 2) + "z"])
def test_longest_names_give_valid_azure_names(site, name):
    assert len(name) == MAX_NAME
    rendered = templates.render(site, templates.Spec(name))
    params = rendered.parameters(templates.DISTRIBUTION_POINT)
    storage = params["storageAccountName"]["value"]
    assert STORAGE_NAME.match(storage), storage
    assert len(rendered.names.resource_group) <= 90
    assert len(rendered.names.site) <= 60 and len(rendered.names.plan) <= 60


def test_storage_names_stay_unique_per_site(tmp_path, site):
    names = {templates.render(site, templates.Spec(n)).names.storage_account
             for n in ("dp-1", "dp1", "d-p1")}
    assert len(names) == 3
    other = make_site(tmp_path / "other")
    (other.home / "site.id").write_text("fedcba9876543210\n")
    other = Site.open(other.home)
    assert templates.render(other, templates.Spec("dp1")).names.storage_account not in names


@pytest.mark.parametrize("spec, rule", [
    (templates.Spec("Dp1"), "name"),
    (templates.Spec("a" * (MAX_NAME + 1)), "name"),
    (templates.Spec("dp1", instances=0), "instance count"),
    (templates.Spec("dp1", instances=31), "instance count"),
    (templates.Spec("dp1", region="west europe!"), "region"),
    (templates.Spec("dp1", fqdn="not a host"), "fqdn"),
    (templates.Spec("dp1", fqdn="localhost"), "fqdn"),
    (templates.Spec("dp1", fqdn="-bad.example.com"), "fqdn"),
    (templates.Spec("dp1", app_settings={"BAD-NAME": "x"}), "app setting"),
])
def test_bad_input_is_a_usage_error(site, spec, rule):
    with pytest.raises(UsageError, match=rule):
        templates.render(site, spec)


def test_fqdn_is_normalised():
    assert templates.check_fqdn("CDP.Example.com.") == "cdp.example.com"


# --- cdp render -------------------------------------------------------------------------------


@pytest.fixture
def home(cdp_home: Path) -> Path:
    make_site(cdp_home)
    return cdp_home


def test_cdp_render_writes_the_four_files(run_cdp, home, tmp_path):
    out = tmp_path / "deep" / "out"
    result = run_cdp("render", "dp1", "--out", out, "--json")
    assert result.code == 0, result
    data = result.json()
    assert data["name"] == "dp1"
    assert data["out"] == str(out)
    assert sorted(Path(f).name for f in data["files"]) == sorted(FILES)
    assert set(data) == {"name", "out", "files", "template_hash", "resource_group",
                         "storage_account", "site"}
    for name in FILES:
        json.loads((out / name).read_text())
    params = json.loads((out / "distribution-point.parameters.json").read_text())["parameters"]
    assert params["storageAccountName"]["value"] == data["storage_account"]
    assert params["siteName"]["value"] == data["site"]
    assert params["instances"]["value"] == 2
    # The same app settings ``cdp provision`` deploys.
    wanted = deploy.app_settings(Site.open(home), "dp1")
    assert params["appSettings"]["value"] == [{"name": k, "value": v} for k, v in sorted(wanted.items())]


def test_cdp_render_instances_go_to_the_parameter_file(run_cdp, home, tmp_path):
    out = tmp_path / "out"
    result = run_cdp("render", "dp1", "--out", out, "--instances", "4", "--fqdn", "cdp.example.com")
    assert result.code == 0, result
    params = json.loads((out / "distribution-point.parameters.json").read_text())["parameters"]
    assert params["instances"]["value"] == 4
    assert params["fqdn"]["value"] == "cdp.example.com"
    template = json.loads((out / "distribution-point.json").read_text())
    plan = resource(template, "Microsoft.Web/serverfarms")
    assert plan["sku"]["capacity"] == "[parameters('instances')]"


@pytest.mark.parametrize("args, rule", [
    (["Bad_Name"], "invalid name"),
    (["dp-"], "invalid name"),
    (["a" * (MAX_NAME + 1)], "invalid name"),
    (["dp1", "--instances", "0"], "instance count"),
    (["dp1", "--instances", "31"], "instance count"),
    (["dp1", "--fqdn", "bad..example.com"], "fqdn"),
])
def test_cdp_render_bad_input_exits_2_and_writes_nothing(run_cdp, home, tmp_path, args, rule):
    out = tmp_path / "out"
    result = run_cdp("render", args[0], "--out", out, *args[1:])
    assert result.code == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and rule in lines[0], result
    assert not out.exists()


def test_cdp_render_into_a_file_is_refused(run_cdp, home, tmp_path):
    out = tmp_path / "a-file"
    out.write_text("keep me")
    result = run_cdp("render", "dp1", "--out", out)
    assert result.code == 2, result
    assert out.read_text() == "keep me"


def test_cdp_render_error_in_own_template_names_it(run_cdp, cdp_home, tmp_path):
    own = copy_templates(tmp_path / "own-templates")
    path = own / "distribution-point.json.j2"
    edit(path, "{{ api.web | tojson }}", "{{ api.webb | tojson }}")
    make_site(cdp_home, f'templates_dir = "{own}"\n')
    out = tmp_path / "out"
    result = run_cdp("render", "dp1", "--out", out)
    assert result.code == 1, result
    assert str(path) in result.stderr and "webb" in result.stderr
    assert not out.exists()
