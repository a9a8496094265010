"""The distribution manager: send package versions to distribution points and look after them.

It resolves which distribution points a command acts on, redeploys stale ones first, and hands
the work to :mod:`provisioner.content` (chunk, encrypt, upload, validate, collect garbage).
The site records each version's source (for repairs) and where it went.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from provisioner import deploy, storage
from provisioner.content import keys as package_keys
from provisioner.content import layout, types
from provisioner.content import manifest as manifest_mod
from provisioner.content.store import ChunkIndex, PackageStore
from provisioner.content.upload import PackageVersion, Target, UploadResult, distribute as upload
from provisioner.errors import CdpError, UsageError
from provisioner.site import Site, records

Info = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


@dataclass(frozen=True)
class Request:
    path: Path
    package: str
    version: str
    content_type: str = "application"
    to: tuple[str, ...] = ()
    group: str | None = None
    force: bool = False


def resolve(site: Site, to=(), group: str | None = None) -> list[str]:
    """The distribution points named by ``--to`` or ``--group`` (exactly one of them)."""
    if bool(to) == bool(group):
        raise UsageError("name the distribution points with --to NAME... or --group G (one of them)")
    if group:
        if group not in site.config.groups:
            known = ", ".join(sorted(site.config.groups)) or "none defined in cdp.toml"
            raise UsageError(f"unknown distribution point group {group!r} (groups: {known})")
        names = list(site.config.groups[group])
    else:
        names = list(dict.fromkeys(to))
    for name in names:
        records.require(site.state, name)
    return names


def holders(site: Site, on=()) -> list[str]:
    """``--on NAME...`` checked, or every Succeeded distribution point."""
    if on:
        return [records.require(site.state, name).name for name in dict.fromkeys(on)]
    return [r.name for r in records.all_records(site.state) if r.state == records.SUCCEEDED]


def store_of(site: Site, name: str, package: str) -> PackageStore:
    record = records.require(site.state, name)
    service = storage.blob_service(site, record)
    return PackageStore(service.get_container_client(layout.container_name(package)))


def distribute(site: Site, request: Request, info: Info = _quiet, progress=None) -> dict:
    """Distribute one version to every named distribution point; one failing does not stop the others."""
    layout.check_package_id(request.package)
    layout.check_version(request.version)
    types.check(request.content_type, request.force)
    if not request.path.exists():
        raise UsageError(f"{request.path}: no such file or folder")
    names = resolve(site, request.to, request.group)
    tree = manifest_mod.scan(request.path)
    started = time.monotonic()
    targets, failed = [], []
    for name in names:
        try:
            deploy.ensure_current(site, name, info)
            store = store_of(site, name, request.package)
            targets.append(Target(name, store, ChunkIndex(site.state, store.location)))
        except CdpError as exc:
            failed.append(UploadResult(name, status="failed", bytes_total=tree.size, error=str(exc),
                                       seconds=round(time.monotonic() - started, 3)))
    results = list(failed)
    if targets:
        keys = package_keys.get_or_create(site.state, site.master_key(), request.package)
        release = PackageVersion(request.package, request.version, request.content_type, keys)
        info(f"distributing {request.package} {request.version} ({tree.size:,} bytes) to "
             f"{', '.join(t.name for t in targets)}")
        outcome = upload(tree, release, targets, progress=progress)
        results += outcome.results
        if outcome.manifest is not None:
            _record(site, request, outcome.manifest, outcome.results)
    order = {name: i for i, name in enumerate(names)}
    results.sort(key=lambda r: order[r.distribution_point])
    return {"package": request.package, "version": request.version,
            "results": [r.to_json() for r in results]}


def _record(site: Site, request: Request, manifest: dict, results: list[UploadResult]) -> None:
    with site.state.tx() as db:
        db.execute(
            "INSERT OR REPLACE INTO package_versions"
            "(package_id, version, content_type, source, bytes_total, chunks_total) VALUES (?,?,?,?,?,?)",
            (request.package, request.version, request.content_type, str(request.path.resolve()),
             manifest.get("total_size", 0), len(manifest["chunks"])))
        for result in results:
            db.execute(
                "INSERT OR REPLACE INTO placements(package_id, version, distribution_point, status, error)"
                " VALUES (?,?,?,?,?)",
                (request.package, request.version, result.distribution_point, result.status, result.error))


def known_packages(site: Site) -> list[str]:
    rows = site.state.query("SELECT package_id FROM package_keys ORDER BY package_id")
    return [row["package_id"] for row in rows]


def source_of(site: Site, package: str, version: str) -> tuple[Path, str]:
    rows = site.state.query(
        "SELECT source, content_type FROM package_versions WHERE package_id = ? AND version = ?",
        (package, version))
    if not rows:
        raise CdpError(f"the site has no record of {package} {version}'s source; distribute it again")
    return Path(rows[0]["source"]), rows[0]["content_type"]
