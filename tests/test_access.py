"""Access bundles: sources from cdp.toml's boundary groups, package keys, 0600 files, the CLI."""

import json
import os
import stat

import pytest

from provisioner import access, config, tokens
from provisioner.content import keys as package_keys
from provisioner.errors import CdpError, ConfigError, UsageError
from provisioner.localcloud import LocalCloud, certs
from provisioner.site import Site, records

GROUPS = """
[boundary_groups.emea]
clients = ["pc-*", "kiosk-1"]
distribution_points = ["dp3", "dp1"]
[boundary_groups.labs]
clients = ["pc-lab-*"]
distribution_points = ["dp4", "dp1"]
"""


def make_site(home, toml=None):
    home.mkdir(parents=True, exist_ok=True)
    if toml is not None:
        (home / "cdp.toml").write_text(toml, encoding="utf-8")
    return Site.open(home)


def add_point(site, name, region="westeurope", target="azure", state=records.SUCCEEDED, stopped=False):
    records.save(site.state, records.DistributionPointRecord(
        name=name, target=target, region=region, resource_group=f"cdp-{name}-rg",
        storage_account=f"cdp{name}abc123", site_name=f"cdp-{name}-1234", instances=2, state=state,
        service_url=f"https://{name}.example.net", stopped=stopped,
    ))


def add_package(site, package):
    return package_keys.get_or_create(site.state, site.master_key(), package)


@pytest.fixture
def site(tmp_path):
    site = make_site(tmp_path / "home", GROUPS)
    for name, region in (("dp1", "westeurope"), ("dp2", "northeurope"), ("dp3", "eastus"),
                         ("dp4", "northeurope"), ("dp5", "westeurope")):
        add_point(site, name, region)
    add_point(site, "dp0", state=records.FAILED)
    add_point(site, "dp9", state=records.DEPLOYING)
    add_package(site, "app1")
    add_package(site, "app2")
    return site


def names(sources):
    return [source.distribution_point for source in sources]


# -- cdp.toml: [boundary_groups] and [clients] --------------------------------------------------


def test_config_parses_groups_in_file_order(tmp_path):
    path = tmp_path / "cdp.toml"
    path.write_text(GROUPS + "[clients]\nallow_cloud_distribution_points = false\n")
    cfg = config.load(path)
    assert list(cfg.boundary_groups) == ["emea", "labs"]
    assert cfg.boundary_groups["emea"].clients == ("pc-*", "kiosk-1")
    assert cfg.boundary_groups["emea"].distribution_points == ("dp3", "dp1")
    assert cfg.clients.allow_cloud_distribution_points is False


def test_config_defaults_allow_cloud_distribution_points(tmp_path):
    cfg = config.load(tmp_path / "cdp.toml")
    assert cfg.boundary_groups == {} and cfg.clients.allow_cloud_distribution_points is True


@pytest.mark.parametrize("text, key", [
    ("boundary_groups = 1", "boundary_groups"),
    ("[boundary_groups]\nemea = 1", "boundary_groups.emea"),
    ('[boundary_groups.emea]\nclients = ["pc-*"]', "boundary_groups.emea.distribution_points"),
    ('[boundary_groups.emea]\ndistribution_points = ["dp1"]', "boundary_groups.emea.clients"),
    ('[boundary_groups.emea]\nclients = []\ndistribution_points = ["dp1"]', "boundary_groups.emea.clients"),
    ('[boundary_groups.emea]\nclients = ["pc-*"]\ndistribution_points = "dp1"',
     "boundary_groups.emea.distribution_points"),
    ('[boundary_groups.emea]\nclients = ["pc-*"]\ndistribution_points = ["DP_1"]',
     "boundary_groups.emea.distribution_points"),
    ('[boundary_groups.emea]\nclients = ["pc-*"]\ndistribution_points = ["dp1", "dp1"]',
     "boundary_groups.emea.distribution_points"),
    ('[boundary_groups.emea]\nclients = ["pc-*"]\ndistribution_points = ["dp1"]\nfallback = 1',
     "boundary_groups.emea.fallback"),
    ("clients = 1", "clients"),
    ('[clients]\nallow_cloud_distribution_points = "yes"', "clients.allow_cloud_distribution_points"),
    ("[clients]\nallow_cloud = true", "clients.allow_cloud"),
])
def test_config_errors_name_file_and_key(tmp_path, text, key):
    path = tmp_path / "cdp.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == key and str(path) in str(err.value)


# -- sources --------------------------------------------------------------------------------------


def test_client_in_no_group_gets_every_succeeded_point_by_name(site):
    assert names(access.sources_for(site, "server-7")) == ["dp1", "dp2", "dp3", "dp4", "dp5"]


def test_boundary_group_order_is_kept(site):
    assert names(access.sources_for(site, "kiosk-1")) == ["dp3", "dp1"]


def test_several_groups_in_file_order_without_duplicates(site):
    assert names(access.sources_for(site, "pc-lab-2")) == ["dp3", "dp1", "dp4"]


def test_region_preference_moves_that_region_first(site):
    assert names(access.sources_for(site, "pc-lab-2", prefer_region="northeurope")) == ["dp4", "dp3", "dp1"]
    assert names(access.sources_for(site, "server-7", prefer_region="westeurope")) == [
        "dp1", "dp5", "dp2", "dp3", "dp4"]


def test_region_nobody_is_in_warns_and_keeps_order(site):
    warnings = []
    assert names(access.sources_for(site, "kiosk-1", "japaneast", warnings.append)) == ["dp3", "dp1"]
    assert warnings == ["no source of client kiosk-1 is in region japaneast"]


def test_group_point_not_succeeded_is_skipped_with_a_warning(tmp_path):
    site = make_site(tmp_path / "h", '[boundary_groups.g]\nclients = ["*"]\ndistribution_points = ["dp2", "dp1"]\n')
    add_point(site, "dp1")
    add_point(site, "dp2", state=records.FAILED)
    warnings = []
    assert names(access.sources_for(site, "pc-1", warn=warnings.append)) == ["dp1"]
    assert "dp2" in warnings[0]


def test_stopped_point_stays_a_source(tmp_path):
    site = make_site(tmp_path / "h")
    add_point(site, "dp1", stopped=True)
    add_point(site, "dp2")
    assert names(access.sources_for(site, "pc-1")) == ["dp1", "dp2"]


def test_group_without_usable_point_fails(tmp_path):
    site = make_site(tmp_path / "h", '[boundary_groups.g]\nclients = ["pc-*"]\ndistribution_points = ["dp7"]\n')
    add_point(site, "dp1")
    with pytest.raises(CdpError, match="boundary group.* g ") as err:
        access.sources_for(site, "pc-1")
    assert not isinstance(err.value, UsageError)


def test_no_point_at_all_fails(tmp_path):
    with pytest.raises(CdpError, match="no content source"):
        access.sources_for(make_site(tmp_path / "h"), "pc-1")


def test_cloud_points_not_allowed_fails(tmp_path):
    site = make_site(tmp_path / "h", "[clients]\nallow_cloud_distribution_points = false\n")
    add_point(site, "dp1")
    with pytest.raises(CdpError, match="allow_cloud_distribution_points = false"):
        access.sources_for(site, "pc-1")


# -- bundles --------------------------------------------------------------------------------------


def test_bundle_round_trip(site, tmp_path):
    data = access.build_bundle(site, "pc-lab-2", ["app2"], ttl=3600)
    path = access.write_bundle(data, tmp_path / "pc.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    bundle = access.load_bundle(path)
    assert bundle.client == "pc-lab-2" and bundle.site == site.site_id and bundle.packages == ("app2",)
    assert [s.to_json() for s in bundle.sources] == data["sources"]
    assert bundle.sources[0].service_url == "https://dp3.example.net"
    assert bundle.ca_bundle is None  # no local source
    assert bundle.keys_for("app2") == package_keys.load(site.state, site.master_key(), "app2")
    with pytest.raises(UsageError, match="no keys for package app1"):
        bundle.keys_for("app1")
    claims = tokens.verify(bundle.token, tokens.public_key_pem(site), "dp4", "app2", issuer=site.site_id)
    assert claims["sub"] == "pc-lab-2" and claims["cdps"] == ["dp3", "dp1", "dp4"]
    assert claims["exp"] - claims["iat"] == 3600
    assert bundle.summary() == access.summary(data)
    assert "token" not in repr(bundle) and bundle.token not in repr(bundle)


def test_without_package_covers_every_known_package(site):
    data = access.build_bundle(site, "pc-1")
    assert data["packages"] == ["app1", "app2"] and [k["package"] for k in data["keys"]] == ["app1", "app2"]
    claims = tokens.verify(data["token"], tokens.public_key_pem(site), "dp1", "app1")
    assert claims["pkgs"] == ["app1", "app2"]


def test_unknown_package_is_named(site):
    with pytest.raises(UsageError, match="unknown package.*nope"):
        access.build_bundle(site, "pc-1", ["app1", "nope"])


def test_site_without_packages_fails(tmp_path):
    site = make_site(tmp_path / "h")
    add_point(site, "dp1")
    with pytest.raises(UsageError, match="no packages"):
        access.build_bundle(site, "pc-1")


def test_local_source_carries_the_local_ca(tmp_path):
    site = make_site(tmp_path / "h")
    add_point(site, "dp1", target="local")
    add_package(site, "app1")
    with pytest.raises(CdpError, match="cdp local start"):
        access.build_bundle(site, "pc-1")
    ca = certs.ensure(LocalCloud(site).cert_paths.folder).ca_cert
    data = access.build_bundle(site, "pc-1")
    assert data["ca_bundle"] == ca.read_text() and "BEGIN CERTIFICATE" in data["ca_bundle"]


def test_bundle_holds_no_site_secret(site, tmp_path):
    path = access.write_bundle(access.build_bundle(site, "pc-1"), tmp_path / "b.json")
    text = path.read_text()
    private = (site.keys_dir / "token.key").read_text()
    body = "".join(private.strip().splitlines()[1:-1])
    assert "PRIVATE" not in text and body not in text
    assert site.master_key().hex() not in text


def test_write_replaces_atomically_and_refuses_folders(site, tmp_path):
    target = tmp_path / "b.json"
    target.write_text("old")
    os.chmod(target, 0o644)
    access.write_bundle({"x": 1}, target)
    assert json.loads(target.read_text()) == {"x": 1} and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    with pytest.raises(UsageError, match="is a folder"):
        access.write_bundle({}, tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        access.write_bundle({}, tmp_path / "no" / "b.json")


@pytest.mark.parametrize("content, match", [
    (None, "does not exist"),
    ("{not json", "is not JSON"),
    ("[1]", "not a JSON object"),
    ('{"format": 1}', "lacks client, site"),
    ('{"format": 2, "client": "c", "site": "s", "expires_at": "x", "token": "t", "packages": [],'
     ' "keys": [], "sources": []}', "format 2"),
    ('{"format": 1, "client": "c", "site": "s", "expires_at": "x", "token": "t", "packages": [],'
     ' "keys": [], "sources": []}', "damaged"),
    ('{"format": 1, "client": "c", "site": "s", "expires_at": "2030-01-01T00:00:00Z", "token": "t",'
     ' "packages": [], "keys": [{"package": "a"}], "sources": []}', "damaged"),
    ('{"format": 1, "client": "c", "site": "s", "expires_at": "2030-01-01T00:00:00Z", "token": "t",'
     ' "packages": [], "keys": [], "sources": []}', "no content source"),
])
def test_load_bundle_errors(tmp_path, content, match):
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=match):
        access.load_bundle(path)


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_issue_json_shows_no_secret(site, run_cdp, tmp_path):
    result = run_cdp("token", "issue", "--client", "kiosk-1", "--package", "app1", "--ttl", "90m",
                     "--prefer-region", "westeurope", "--out", tmp_path / "k.json", "--json", home=site.home)
    assert result.code == 0, result
    shown = result.json()
    assert set(shown) == {"client", "expires_at", "packages", "sources", "out"}
    assert shown["packages"] == ["app1"]
    assert [s["distribution_point"] for s in shown["sources"]] == ["dp1", "dp3"]
    saved = json.loads((tmp_path / "k.json").read_text())
    assert stat.S_IMODE((tmp_path / "k.json").stat().st_mode) == 0o600
    for secret in (saved["token"], saved["keys"][0]["content_key"], saved["keys"][0]["id_key"]):
        assert secret not in result.stdout and secret not in result.stderr
    assert "PRIVATE" not in result.stdout + result.stderr


def test_cli_bad_ttl_exits_2(site, run_cdp, tmp_path):
    result = run_cdp("token", "issue", "--client", "pc-1", "--ttl", "31d", "--out", tmp_path / "b.json",
                     home=site.home)
    assert result.code == 2, result
    assert result.stderr.strip().splitlines() == ["error: bad ttl '31d': must be from 1s to 30d"]
    assert not (tmp_path / "b.json").exists()


def test_cli_not_allowed_exits_1_with_one_line(tmp_path, run_cdp):
    site = make_site(tmp_path / "h", "[clients]\nallow_cloud_distribution_points = false\n")
    add_point(site, "dp1")
    add_package(site, "app1")
    result = run_cdp("token", "issue", "--client", "pc-1", "--out", tmp_path / "b.json", home=site.home)
    assert result.code == 1, result
    assert len(result.stderr.strip().splitlines()) == 1 and "allow_cloud_distribution_points" in result.stderr
    assert not (tmp_path / "b.json").exists()
