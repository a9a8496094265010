"""Distribution point names and the Azure names derived from them.

A NAME is what the administrator types (``dp1``, ``emea-2``). Every Azure name derived from it
must be valid, so NAME is checked before anything is written or deployed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from provisioner.errors import UsageError

MAX_NAME = 15
_NAME = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,%d}$" % (MAX_NAME - 1))
_STORAGE = re.compile(r"^[a-z0-9]{3,24}$")
NAME_RULE = (
    f"a distribution point name is 1 to {MAX_NAME} characters: lowercase letters, digits and "
    "single hyphens, starting with a letter and not ending with a hyphen"
)


def check_name(name: str) -> str:
    """Return ``name`` if valid, else raise UsageError naming the rule."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(f"invalid name {name!r}: {NAME_RULE}")
    return name


@dataclass(frozen=True)
class AzureNames:
    """The Azure names of one distribution point of one site."""

    resource_group: str
    storage_account: str
    plan: str
    site: str

    @classmethod
    def derive(cls, name: str, site_id: str) -> "AzureNames":
        check_name(name)
        # The hash binds the site and the exact NAME (with its hyphens), so ``dp-1`` and
        # ``dp1`` get different storage accounts, and two sites do not collide in Azure's
        # global name spaces (storage accounts, *.azurewebsites.net).
        digest = hashlib.sha256(f"{site_id}/{name}".encode()).hexdigest()
        storage = "cdp" + name.replace("-", "") + digest[:6]
        assert _STORAGE.match(storage), storage
        return cls(
            resource_group=f"cdp-{name}-rg",
            storage_account=storage,
            plan=f"cdp-{name}-plan",
            site=f"cdp-{name}-{digest[:8]}",
        )
