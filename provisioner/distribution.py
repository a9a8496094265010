"""The distribution manager: send package versions to distribution points and look after them.

It resolves which distribution points a command acts on, redeploys stale ones first, and hands
the work to :mod:`provisioner.content` (chunk, encrypt, upload, validate, collect garbage).
The site records each version's source (for repairs) and where it went.

Work on one package is coordinated between cdp processes of the site by a lock file
(``CDP_HOME/locks/<package>.lock``): distributions and repairs share it, removal (which collects
garbage and must not delete chunks an upload in flight has stored but not yet listed in a
manifest) takes it alone.
"""

from __future__ import annotations

import fcntl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provisioner.content import keys as package_keys
from provisioner.content import layout, types
from provisioner.content import manifest as manifest_mod
from provisioner.errors import CdpError, UsageError
from provisioner.site import Site, records

if TYPE_CHECKING:
    from provisioner.content.store import PackageStore
    from provisioner.content.upload import Target

# The Azure SDK clients (deploy, storage, content.store/upload) are imported where they are used:
# bad input is refused before they load, in a fraction of the time.

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


@dataclass(frozen=True)
class Plan:
    """A checked request: the distribution points and the scanned source (nothing read yet)."""

    request: Request
    names: list[str]
    tree: manifest_mod.Tree


def resolve(site: Site, to=(), group: str | None = None) -> list[str]:
    """The distribution points named by ``--to`` or ``--group`` (exactly one of them)."""
    if bool(to) == bool(group):
        raise UsageError("name the distribution points with --to NAME... or --group G (one of them)")
    if group:
        if group not in site.config.groups:
            known = ", ".join(sorted(site.config.groups)) or "none defined in cdp.toml"
            raise UsageError(f"unknown distribution point group {group!r} (groups: {known})")
        names = list(dict.fromkeys(site.config.groups[group]))
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


class Stores:
    """Package containers on distribution points: one storage client (one listKeys) per point."""

    def __init__(self, site: Site):
        self.site = site
        self._services: dict[str, object] = {}
        self._lock = threading.Lock()

    def of(self, name: str, package: str) -> PackageStore:
        from provisioner import storage
        from provisioner.content.store import PackageStore

        with self._lock:
            service = self._services.get(name)
        if service is None:
            service = storage.blob_service(self.site, records.require(self.site.state, name))
            with self._lock:
                self._services[name] = service
        return PackageStore(service.get_container_client(layout.container_name(package)))


def store_of(site: Site, name: str, package: str) -> PackageStore:
    return Stores(site).of(name, package)


@contextmanager
def package_lock(site: Site, package: str, *, exclusive: bool = False, info: Info = _quiet) -> Iterator[None]:
    """Hold the site's lock on ``package``: shared waits for a removal; exclusive never waits.
    The lock is released once every front end answers with what was changed under it."""
    folder = site.home / "locks"
    folder.mkdir(mode=0o700, exist_ok=True)
    with open(folder / f"{layout.check_package_id(package)}.lock", "a+b") as handle:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if exclusive:
                raise CdpError(f"package {package} is being distributed or repaired by another cdp "
                               "process; try again when it has finished") from None
            info(f"waiting: package {package} is being removed by another cdp process")
            fcntl.flock(handle, mode)
        try:
            yield
        finally:  # what was changed under the lock is what clients get once it is released
            from provisioner.content.store import wait_until_visible

            wait_until_visible()


def plan(site: Site, request: Request) -> Plan:
    """Check everything about ``request`` (UsageError, exit 2) before anything is touched."""
    layout.check_package_id(request.package)
    layout.check_version(request.version)
    types.check(request.content_type, request.force)
    if not request.path.exists():
        raise UsageError(f"{request.path}: no such file or folder")
    names = resolve(site, request.to, request.group)
    return Plan(request, names, manifest_mod.scan(request.path))


def distribute(site: Site, request: Request, info: Info = _quiet, progress=None) -> dict:
    """Distribute one version to every named distribution point; one failing does not stop the others."""
    return run(site, plan(site, request), info, progress)


def run(site: Site, planned: Plan, info: Info = _quiet, progress=None) -> dict:
    """Carry out a :func:`plan`: redeploy stale points, upload, record what went where."""
    from provisioner.content.upload import PackageVersion, Target, UploadResult
    from provisioner.content.upload import distribute as upload

    request, tree = planned.request, planned.tree
    with package_lock(site, request.package, info=info):
        started = time.monotonic()
        targets, results = [], []
        for name, target in _targets(site, planned.names, request.package, info):
            if isinstance(target, Target):
                targets.append(target)
            else:
                results.append(UploadResult(name, status="failed", bytes_total=tree.size, error=str(target),
                                            seconds=time.monotonic() - started))
        manifest = None
        if targets:
            keys = package_keys.get_or_create(site.state, site.master_key(), request.package)
            release = PackageVersion(request.package, request.version, request.content_type, keys)
            info(f"distributing {request.package} {request.version} ({tree.size:,} bytes) to "
                 f"{', '.join(t.name for t in targets)}")
            outcome = upload(tree, release, targets, progress=progress)
            manifest, results = outcome.manifest, results + outcome.results
        _record(site, request, manifest, results)
    order = {name: i for i, name in enumerate(planned.names)}
    results.sort(key=lambda r: order[r.distribution_point])
    for result in results:
        result.seconds = round(result.seconds, 3)
    return {"package": request.package, "version": request.version,
            "results": [r.to_json() for r in results]}


def _targets(site: Site, names: list[str], package: str, info: Info) -> list[tuple[str, Target | CdpError]]:
    """Each point made current (redeployed if stale) and its container, concurrently."""
    from provisioner import deploy
    from provisioner.content.store import ChunkIndex
    from provisioner.content.upload import Target

    _ = (site.config, site.state)  # load them once, before the threads
    stores = Stores(site)

    def target(name: str) -> Target:
        deploy.ensure_current(site, name, info)
        store = stores.of(name, package)
        return Target(name, store, ChunkIndex(site.state, store.location))

    with ThreadPoolExecutor(max(1, min(len(names), 8)), thread_name_prefix="cdp-prepare") as pool:
        futures = [(name, pool.submit(target, name)) for name in names]
        found = []
        for name, future in futures:
            try:
                found.append((name, future.result()))
            except CdpError as exc:
                found.append((name, exc))
    return found


def _record(site: Site, request: Request, manifest: dict | None, results: list) -> None:
    """Where the version went (failures too); the version itself once a point holds it."""
    with site.state.tx() as db:
        if manifest is not None and any(r.status == "uploaded" for r in results):
            db.execute(
                "INSERT OR REPLACE INTO package_versions"
                "(package_id, version, content_type, source, bytes_total, chunks_total) VALUES (?,?,?,?,?,?)",
                (request.package, request.version, request.content_type, str(request.path.resolve()),
                 manifest["size"], len(manifest["chunks"])))
        for result in results:  # a failed rerun does not unmake a version stored before
            db.execute(
                "INSERT INTO placements(package_id, version, distribution_point, status, error)"
                " VALUES (?,?,?,?,?) ON CONFLICT DO UPDATE SET"
                " status = CASE WHEN status = 'uploaded' THEN status ELSE excluded.status END,"
                " error = excluded.error, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ','now')",
                (request.package, request.version, result.distribution_point, result.status, result.error))


def known_packages(site: Site) -> list[str]:
    rows = site.state.query("SELECT package_id FROM package_keys ORDER BY package_id")
    return [row["package_id"] for row in rows]


def recorded_versions(site: Site, package: str) -> dict[str, int]:
    """The versions of ``package`` the site distributed, with their plaintext size."""
    rows = site.state.query(
        "SELECT version, bytes_total FROM package_versions WHERE package_id = ? ORDER BY created_at, rowid",
        (package,))
    return {row["version"]: row["bytes_total"] for row in rows}


def source_of(site: Site, package: str, version: str) -> tuple[Path, str]:
    rows = site.state.query(
        "SELECT source, content_type FROM package_versions WHERE package_id = ? AND version = ?",
        (package, version))
    if not rows:
        raise CdpError(f"the site has no record of {package} {version}'s source; distribute it again")
    return Path(rows[0]["source"]), rows[0]["content_type"]
