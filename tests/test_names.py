"""Distribution point names and the Azure names derived from them."""

import re

import pytest

from provisioner.errors import UsageError
from provisioner.names import MAX_NAME, AzureNames, check_name

STORAGE = re.compile(r"^[a-z0-9]{3,24}$")


@pytest.mark.parametrize("name", ["a", "dp1", "emea-2", "a" * MAX_NAME, "x-1-y"])
def test_valid_names(name):
    assert check_name(name) == name
    names = AzureNames.derive(name, "0123456789abcdef")
    assert STORAGE.match(names.storage_account)
    assert len(names.resource_group) <= 90
    assert 2 <= len(names.site) <= 60 and not names.site.endswith("-")
    assert len(names.plan) <= 40


@pytest.mark.parametrize("name", ["", "Bad_Name!", "DP1", "1dp", "-dp", "dp-", "dp--1", "dp 1",
                                  "a" * (MAX_NAME + 1), "dp.1", "dp_1"])
def test_invalid_names_state_the_rule(name):
    with pytest.raises(UsageError, match="lowercase letters, digits and single hyphens"):
        check_name(name)


def test_storage_names_unique_per_site_and_name():
    site = "0123456789abcdef"
    assert AzureNames.derive("dp-1", site).storage_account != AzureNames.derive("dp1", site).storage_account
    assert AzureNames.derive("dp1", site) == AzureNames.derive("dp1", site)
    assert AzureNames.derive("dp1", site).storage_account != AzureNames.derive("dp1", "other").storage_account
