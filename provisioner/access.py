"""Access bundles: what the site gives a client (``cdp token issue``) and what the client reads back.

A bundle is a JSON file, mode 0600, holding the token, the keys of the packages the token
covers (the cloud never holds them), the local CA certificate when a source is on the local
cloud, and the content sources in priority order::

    {"format": 1, "client": "pc-1", "site": "<site id>",
     "issued_at": "...Z", "expires_at": "...Z",
     "token": "<JWT>",
     "packages": ["app1"],
     "keys": [{"package": "app1", "content_key": "<b64>", "id_key": "<b64>"}],
     "sources": [{"distribution_point": "dp1", "service_url": "https://...", "region": "...", "target": "local"}],
     "ca_bundle": "-----BEGIN CERTIFICATE-----..." or null}

Sources follow cdp.toml. A client matched by boundary groups (``[boundary_groups.NAME]``,
``clients`` = glob patterns of client ids) gets their distribution points, groups in file order
and each group's list in its order; a client in no boundary group gets every distribution
point of the site, by name. Only distribution points whose deployment Succeeded are sources
(a stopped one stays: the client falls back past its 503 and finds it again after a start).
``--prefer-region`` moves the sources in that region to the front, keeping their order.
``[clients] allow_cloud_distribution_points = false`` means no source, so no bundle.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from provisioner.content import keys as package_keys
from provisioner.content.keys import PackageKeys
from provisioner.content.layout import check_package_id
from provisioner.errors import CdpError, UsageError
from provisioner.site import Site, records
from provisioner.site.keys import replace_private

FORMAT = 1
SUMMARY_FIELDS = ("client", "expires_at", "packages", "sources")  # what --json shows: no secret
SOURCE_FIELDS = ("distribution_point", "service_url", "region", "target")


@dataclass(frozen=True)
class Source:
    distribution_point: str
    service_url: str
    region: str
    target: str

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SOURCE_FIELDS}


@dataclass(frozen=True)
class Bundle:
    """An access bundle as a client holds it. Secrets stay out of repr()."""

    client: str
    site: str
    expires_at: datetime
    packages: tuple[str, ...]
    sources: tuple[Source, ...]
    token: str = field(repr=False)
    keys: dict[str, PackageKeys] = field(repr=False)
    ca_bundle: str | None = field(default=None, repr=False)
    path: Path | None = None

    def keys_for(self, package: str) -> PackageKeys:
        if package not in self.keys:
            where = f" {self.path}" if self.path else ""
            raise UsageError(
                f"the access bundle{where} holds no keys for package {package}"
                f" (it covers {', '.join(self.packages)}); issue one with --package {package}"
            )
        return self.keys[package]

    def summary(self) -> dict[str, Any]:
        """What ``--json`` may show: no token, no keys."""
        return summary({
            "client": self.client,
            "expires_at": _iso(self.expires_at),
            "packages": list(self.packages),
            "sources": [source.to_json() for source in self.sources],
        })


# -- the site side -------------------------------------------------------------------------------


def sources_for(site: Site, client_id: str, prefer_region: str | None = None,
                warn: Callable[[str], None] = lambda message: None) -> list[Source]:
    """The content sources of ``client_id`` in priority order (CdpError if there are none)."""
    config = site.config
    if not config.clients.allow_cloud_distribution_points:
        raise CdpError(
            f"client {client_id} has no content source: cloud distribution points are not allowed"
            f" ([clients] allow_cloud_distribution_points = false in {config.path})"
        )
    usable = {
        record.name: record
        for record in records.all_records(site.state)
        if record.state == records.SUCCEEDED and record.service_url
    }
    groups = [group for group in config.boundary_groups.values()
              if any(fnmatch.fnmatchcase(client_id, pattern) for pattern in group.clients)]
    if groups:
        names: list[str] = []
        for group in groups:
            for name in group.distribution_points:
                if name in names:
                    continue
                if name in usable:
                    names.append(name)
                else:
                    warn(f"boundary group {group.name}: distribution point {name} is not a source"
                         " (unknown or not Succeeded)")
        if not names:
            raise CdpError(
                f"client {client_id} has no content source: no distribution point of boundary group(s)"
                f" {', '.join(g.name for g in groups)} is provisioned and Succeeded"
            )
    else:
        names = sorted(usable)
        if not names:
            raise CdpError(f"client {client_id} has no content source: no distribution point"
                           " is provisioned and Succeeded (see `cdp status`)")
    sources = [Source(name, usable[name].service_url, usable[name].region, usable[name].target)
               for name in names]
    if prefer_region:
        if not any(source.region == prefer_region for source in sources):
            warn(f"no source of client {client_id} is in region {prefer_region}")
        sources.sort(key=lambda source: source.region != prefer_region)  # stable
    return sources


def known_packages(site: Site) -> list[str]:
    """The packages the site holds keys for (it distributed them), by id."""
    return [row["package_id"] for row in
            site.state.query("SELECT package_id FROM package_keys ORDER BY package_id")]


def build_bundle(site: Site, client_id: str, packages: list[str] | None = None, ttl: int | None = None,
          prefer_region: str | None = None, warn: Callable[[str], None] = lambda message: None,
          now: float | None = None) -> dict[str, Any]:
    """Build the access bundle (a dict to write with :func:`write_bundle`).

    ``packages`` None or empty: every package the site knows now, listed in the token; ``ttl``
    None: the token's default lifetime (24 hours)."""
    from provisioner import tokens  # here: a client reading its bundle needs no JWT library

    ttl = tokens.DEFAULT_TTL if ttl is None else ttl
    tokens.check_client_id(client_id)
    wanted = list(dict.fromkeys(check_package_id(p) for p in packages)) if packages else known_packages(site)
    if not wanted:
        raise UsageError("the site has no packages yet: distribute one first (`cdp distribute`)")
    master_key = site.master_key()
    found = {package: package_keys.load(site.state, master_key, package) for package in wanted}
    unknown = [package for package, keys in found.items() if keys is None]
    if unknown:
        raise UsageError(f"unknown package(s) {', '.join(unknown)}: the site never distributed them")
    sources = sources_for(site, client_id, prefer_region, warn)
    issued = int(time.time() if now is None else now)
    token = tokens.issue(site, client_id, [s.distribution_point for s in sources], wanted, ttl, now=issued)
    return {
        "format": FORMAT,
        "client": client_id,
        "site": site.site_id,
        "issued_at": _iso(_utc(issued)),
        "expires_at": _iso(_utc(issued + ttl)),
        "token": token,
        "packages": wanted,
        "keys": [found[package].export() for package in wanted],
        "sources": [source.to_json() for source in sources],
        "ca_bundle": _local_ca(site) if any(s.target == "local" for s in sources) else None,
    }


def summary(bundle: dict[str, Any]) -> dict[str, Any]:
    """The parts of a bundle that are not secret: client, expiry, packages, sources."""
    return {key: bundle[key] for key in SUMMARY_FIELDS}


def _local_ca(site: Site) -> str:
    from provisioner.localcloud import LocalCloud

    path = LocalCloud(site).ca_bundle
    try:
        return path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise CdpError(f"the local cloud's CA certificate {path} is missing: start it with"
                       " `cdp local start`") from None


def write_bundle(data: dict[str, Any], path: Path) -> Path:
    """Write the bundle atomically, mode 0600 from the first byte; replaces an older file."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: folder {path.parent} does not exist")
    replace_private(path, json.dumps(data, indent=2) + "\n")
    return path


# -- the client side -----------------------------------------------------------------------------


def load_bundle(path: Path) -> Bundle:
    """Read an access bundle (``cdp fetch``, ``cdp locate``); UsageError with the reason if unusable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"access bundle {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"access bundle {path} is a folder, not a file") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError(f"access bundle {path} is not JSON") from None
    if not isinstance(data, dict):
        raise UsageError(f"access bundle {path} is not a JSON object")
    missing = [key for key in ("format", "client", "site", "expires_at", "token", "packages", "keys", "sources")
               if key not in data]
    if missing:
        raise UsageError(f"access bundle {path} lacks {', '.join(missing)}")
    if data["format"] != FORMAT:
        raise UsageError(f"access bundle {path} has format {data['format']!r}; this cdp reads format {FORMAT}")
    try:
        expires_at = datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00"))
        sources = tuple(Source(**{name: source[name] for name in SOURCE_FIELDS}) for source in data["sources"])
        keys = {keys.package_id: keys for keys in map(PackageKeys.from_export, data["keys"])}
        packages = tuple(data["packages"])
        ok = (isinstance(data["token"], str) and isinstance(data["client"], str) and isinstance(data["site"], str)
              and all(isinstance(p, str) for p in packages)
              and all(isinstance(getattr(s, n), str) for s in sources for n in SOURCE_FIELDS)
              and isinstance(data.get("ca_bundle"), (str, type(None))))
    except (AttributeError, KeyError, TypeError, ValueError, CdpError):
        ok = False
    if not ok:
        raise UsageError(f"access bundle {path} is damaged (a field has the wrong shape)")
    if not sources:
        raise UsageError(f"access bundle {path} lists no content source")
    return Bundle(client=data["client"], site=data["site"], expires_at=expires_at, packages=packages,
                  sources=sources, token=data["token"], keys=keys, ca_bundle=data.get("ca_bundle"), path=path)


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
