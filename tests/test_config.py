"""cdp.toml validation: every error names the file and the key."""

import pytest

from provisioner import config
from provisioner.errors import ConfigError, UsageError


def write(tmp_path, text):
    path = tmp_path / "cdp.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_file_gives_defaults(tmp_path):
    cfg = config.load(tmp_path / "cdp.toml")
    assert cfg.target == "local"
    assert cfg.instances == 2
    assert cfg.alerts.storage_threshold_gb == 2000
    assert cfg.alerts.egress_threshold_gb == 10000
    assert (cfg.alerts.warning_percent, cfg.alerts.critical_percent) == (50, 90)


def test_full_file(tmp_path):
    (tmp_path / "mytemplates").mkdir()
    cfg = config.load(write(tmp_path, """
target = "azure"
region = "northeurope"
subscription_id = "sub-1"
templates_dir = "mytemplates"
instances = 3
[groups]
europe = ["dp1", "dp2"]
[alerts]
storage_threshold_gb = 10
egress_hard_cap_gb = 5
"""))
    assert cfg.target == "azure" and cfg.region == "northeurope"
    assert cfg.templates_dir == tmp_path / "mytemplates"
    assert cfg.groups == {"europe": ("dp1", "dp2")}
    assert cfg.alerts.storage_threshold_gb == 10 and cfg.alerts.egress_hard_cap_gb == 5


@pytest.mark.parametrize("text, key", [
    ('target = "gcp"', "target"),
    ("instances = 0", "instances"),
    ("instances = true", "instances"),
    ('instances = "2"', "instances"),
    ('colour = "blue"', "colour"),
    ('templates_dir = "nowhere"', "templates_dir"),
    ("[groups]\neurope = []", "groups.europe"),
    ("[alerts]\nstorage_threshold_gb = -1", "alerts.storage_threshold_gb"),
    ("[alerts]\nfoo = 1", "alerts.foo"),
    ("[alerts]\nwarning_percent = 95", "alerts.warning_percent"),
])
def test_bad_values_name_file_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert err.value.key == key
    assert str(path) in str(err.value) and key in str(err.value)
    assert isinstance(err.value, UsageError)


def test_invalid_toml_names_file(tmp_path):
    path = write(tmp_path, "target = ")
    with pytest.raises(ConfigError, match="not valid TOML") as err:
        config.load(path)
    assert str(path) in str(err.value)
