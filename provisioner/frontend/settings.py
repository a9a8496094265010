"""The front end's settings: the web app's app settings, read from the environment once at start.

App Service passes a site's app settings as environment variables; the local cloud does the
same for its front-end processes. A missing or bad setting stops the process at start with one
line naming the setting (:class:`~provisioner.errors.ConfigError`), never with a half-working
front end.

=============================  ===========================================================
CDP_DISTRIBUTION_POINT         this distribution point's name (tokens must list it)
CDP_SITE_ID                    the site's id (tokens must be issued by it)
CDP_TOKEN_PUBLIC_KEY           the site's Ed25519 token public key, PEM
CDP_STORAGE_ACCOUNT            the storage account holding the content
CDP_BLOB_ENDPOINT              its blob endpoint: ``https://ACCOUNT.blob.core.windows.net/``
                               or, locally, ``https://HOST:PORT/ACCOUNT/``
CDP_SAS_TTL_SECONDS            lifetime of a location's SAS (default 3600)
CDP_EGRESS_HARD_CAP_BYTES      optional: refuse locations once the month's egress reaches it
CDP_CA_BUNDLE                  optional: a CA bundle to trust when talking to storage
CDP_STORAGE_KEY                optional: the account key (the local cloud's stand-in for a
                               managed identity); without it, DefaultAzureCredential and
                               user delegation keys
WEBSITE_INSTANCE_ID            set by App Service: names this instance's egress record
=============================  ===========================================================
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from provisioner.errors import CdpError, ConfigError

SOURCE = "app settings"
DEFAULT_SAS_TTL = 3600
# A location is for one download; a day is plenty (and well inside a user delegation key's 7 days).
MAX_SAS_TTL = 24 * 3600
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_INSTANCE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Settings:
    distribution_point: str
    site_id: str
    token_public_key: str
    storage_account: str
    blob_endpoint: str  # always ends with "/"
    sas_ttl: int = DEFAULT_SAS_TTL
    egress_hard_cap: int | None = None
    ca_bundle: str | None = None
    storage_key: str | None = field(default=None, repr=False)
    instance_id: str = ""

    @property
    def uses_account_key(self) -> bool:
        return self.storage_key is not None

    def container_url(self, container: str) -> str:
        return self.blob_endpoint + container

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            distribution_point=_required(env, "CDP_DISTRIBUTION_POINT"),
            site_id=_required(env, "CDP_SITE_ID"),
            token_public_key=_public_key(env),
            storage_account=_account(env),
            blob_endpoint=_endpoint(env),
            sas_ttl=_integer(env, "CDP_SAS_TTL_SECONDS", DEFAULT_SAS_TTL, 1, MAX_SAS_TTL),
            egress_hard_cap=_integer(env, "CDP_EGRESS_HARD_CAP_BYTES", None, 1, None),
            ca_bundle=_ca_bundle(env),
            storage_key=env.get("CDP_STORAGE_KEY") or None,
            instance_id=instance_id(env),
        )


def instance_id(env: Mapping[str, str]) -> str:
    """App Service's ``WEBSITE_INSTANCE_ID``, else host name and pid; safe as a blob name."""
    raw = env.get("WEBSITE_INSTANCE_ID") or f"{socket.gethostname()}-{os.getpid()}"
    return _INSTANCE_UNSAFE.sub("-", raw).strip("-.")[:128] or f"pid-{os.getpid()}"


def _required(env: Mapping[str, str], key: str) -> str:
    value = (env.get(key) or "").strip()
    if not value:
        raise ConfigError(SOURCE, key, "missing; the front end cannot start without it")
    return value


def _public_key(env: Mapping[str, str]) -> str:
    value = _required(env, "CDP_TOKEN_PUBLIC_KEY")
    from provisioner.tokens import Verifier  # parses the key: a bad one fails here, at start

    try:
        Verifier(value)
    except CdpError as exc:  # its message holds no key material
        raise ConfigError(SOURCE, "CDP_TOKEN_PUBLIC_KEY", str(exc)) from None
    return value


def _account(env: Mapping[str, str]) -> str:
    value = _required(env, "CDP_STORAGE_ACCOUNT")
    if not _ACCOUNT.fullmatch(value):
        raise ConfigError(SOURCE, "CDP_STORAGE_ACCOUNT", f"{value!r} is not a storage account name")
    return value


def _endpoint(env: Mapping[str, str]) -> str:
    value = _required(env, "CDP_BLOB_ENDPOINT")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(SOURCE, "CDP_BLOB_ENDPOINT",
                          f"{value!r} is not an https:// blob endpoint without a query")
    return value if value.endswith("/") else value + "/"


def _integer(env: Mapping[str, str], key: str, default: int | None, low: int, high: int | None) -> int | None:
    raw = (env.get(key) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(SOURCE, key, f"{raw!r} is not a whole number {bounds}")
    return value


def _ca_bundle(env: Mapping[str, str]) -> str | None:
    raw = (env.get("CDP_CA_BUNDLE") or "").strip()
    if not raw:
        return None
    if not Path(raw).is_file():
        raise ConfigError(SOURCE, "CDP_CA_BUNDLE", f"{raw} is not a file")
    return raw
