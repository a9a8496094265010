"""Content maintenance on distribution points: list, validate, redistribute (repair), remove.

Each command acts on every distribution point that holds the package unless ``on`` narrows it.
A point whose storage fails is reported with its error; the others carry on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from provisioner import distribution
from provisioner.content import keys as package_keys
from provisioner.content import layout
from provisioner.content import manifest as manifest_mod
from provisioner.content.store import ChunkIndex, MissingContent
from provisioner.content.upload import PackageVersion, Target
from provisioner.content.upload import distribute as upload
from provisioner.errors import CdpError, UsageError
from provisioner.site import Site

Info = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def _keys(site: Site, package: str):
    layout.check_package_id(package)
    keys = package_keys.load(site.state, site.master_key(), package)
    if keys is None:
        raise UsageError(f"unknown package {package!r}: this site never distributed it")
    return keys


def _placed(site: Site, package: str, name: str) -> set[str]:
    """The versions the site stored on ``name`` (its record; storage may have lost them)."""
    rows = site.state.query(
        "SELECT version FROM placements WHERE package_id = ? AND distribution_point = ? AND status = 'uploaded'",
        (package, name))
    return {row["version"] for row in rows}


def list_content(site: Site, package: str | None = None, on=(), version: str | None = None) -> dict:
    """Packages, versions and stored sizes per distribution point (read from storage).

    ``version`` keeps the points and packages that hold that version (and lists it alone)."""
    if package:
        _keys(site, package)
    if version is not None:
        layout.check_version(version)
    packages = [package] if package else distribution.known_packages(site)
    stores = distribution.Stores(site)
    rows = []
    for name in distribution.holders(site, on):
        try:
            for pkg in packages:
                store = stores.of(name, pkg)
                if not store.exists():
                    continue
                sizes = store.chunk_sizes()
                ChunkIndex(site.state, store.location).replace(sizes)
                recorded = distribution.recorded_versions(site, pkg)
                versions = store.versions()
                if version is not None:
                    if version not in versions:
                        continue
                    versions = [version]
                rows.append({"distribution_point": name, "package": pkg, "versions": versions,
                             "version_bytes": {v: recorded.get(v) for v in versions},
                             "current": store.current(), "stored_bytes": sum(sizes.values()),
                             "chunks": len(sizes), "error": None})
        except CdpError as exc:
            rows.append({"distribution_point": name, "package": None, "error": str(exc)})
    return {"content": rows, "ok": not any(r["error"] for r in rows)}


def _report(name: str, version: str | None, **values) -> dict:
    report = {"distribution_point": name, "version": version, "ok": False, "chunks": None,
              "missing": [], "corrupt": [], "error": None, "repairable": False}
    report.update(values)
    return report


def validate(site: Site, package: str, version: str | None = None, on=(), info: Info = _quiet) -> dict:
    """Decrypt every stored chunk of the version(s) and check it against its id."""
    keys = _keys(site, package)
    if version is not None:
        layout.check_version(version)
    stores = distribution.Stores(site)
    reports = []
    for name in distribution.holders(site, on):
        try:
            reports += _validate_on(site, stores.of(name, package), name, keys, version, info)
        except CdpError as exc:
            reports.append(_report(name, version, error=str(exc)))
    if not reports:
        what = f"{package} {version}" if version else package
        raise UsageError(f"{what} is not on any distribution point")
    return {"package": package, "ok": all(r["ok"] for r in reports), "reports": reports}


def _validate_on(site: Site, store, name: str, keys, version: str | None, info: Info) -> list[dict]:
    stored = store.versions() if store.exists() else []
    expected = sorted(set(stored) | _placed(site, keys.package_id, name))
    reports = []
    for ver in (v for v in expected if version in (None, v)):
        info(f"{name}: validating {keys.package_id} {ver}")
        try:
            document = manifest_mod.unseal(store.get_manifest(ver), keys, ver)
            manifest_mod.locations(document)  # says where every chunk is stored
        except MissingContent:
            reports.append(_report(name, ver, error=f"the manifest of {ver} is missing", repairable=True))
            continue
        except CdpError as exc:
            reports.append(_report(name, ver, error=str(exc), repairable=True))
            continue
        damaged = store.damaged_chunks(keys, document)
        reports.append(_report(
            name, ver, ok=not damaged, chunks=len(document["chunks"]), repairable=bool(damaged),
            missing=sorted(c for c, p in damaged.items() if p == "missing"),
            corrupt=sorted(c for c, p in damaged.items() if p == "corrupt")))
    return reports


def redistribute(site: Site, package: str, version: str | None = None, on=(), info: Info = _quiet) -> dict:
    """Repair missing or corrupt chunks (and manifests) from the site's source of each version."""
    keys = _keys(site, package)
    with distribution.package_lock(site, package, info=info):
        checked = validate(site, package, version, on, info)
        stores = distribution.Stores(site)
        repaired = []
        for report in checked["reports"]:
            if report["ok"]:
                continue
            name, ver = report["distribution_point"], report["version"]
            if not report["repairable"]:
                repaired.append({"distribution_point": name, "version": ver, "status": "failed",
                                 "chunks_uploaded": 0, "error": report["error"]})
                continue
            try:
                repaired.append({"distribution_point": name, "version": ver,
                                 **_repair(site, stores.of(name, package), name, keys, report, info)})
            except CdpError as exc:
                repaired.append({"distribution_point": name, "version": ver, "status": "failed",
                                 "chunks_uploaded": 0, "error": str(exc)})
    return {"package": package, "repaired": repaired, "ok": all(r["status"] == "uploaded" for r in repaired)}


def _repair(site: Site, store, name: str, keys, report: dict, info: Info) -> dict:
    package, ver = keys.package_id, report["version"]
    source, content_type = distribution.source_of(site, package, ver)
    if not source.exists():
        raise CdpError(f"the source of {package} {ver} ({source}) is gone; distribute the version again")
    tree = manifest_mod.scan(source)
    _check_same_source(site, store, keys, ver, tree, source)
    bad = set(report["missing"]) | set(report["corrupt"])
    info(f"{name}: repairing {package} {ver} ({len(bad)} damaged chunks) from {source}")
    current = store.current() if store.exists() else None
    newest = _newest(site, package, sorted(set(store.versions() if store.exists() else []) | {ver}))
    outcome = upload(tree, PackageVersion(package, ver, content_type, keys),
                     [Target(name, store, ChunkIndex(site.state, store.location))],
                     repair=bad, make_current=current == ver or (current is None and newest == ver))
    result = outcome.results[0].to_json()
    result["seconds"] = round(result["seconds"], 3)
    return result


def _check_same_source(site: Site, store, keys, version, tree, source) -> None:
    """Refuse to 'repair' a version from a source that no longer matches what was distributed."""
    try:
        stored = manifest_mod.unseal(store.get_manifest(version), keys, version)
    except CdpError:  # missing or damaged: compare with the site's record instead
        recorded = distribution.recorded_versions(site, keys.package_id).get(version)
        if recorded is not None and recorded != tree.size:
            raise _changed(source, version) from None
        return
    if sorted((f["path"], f["size"]) for f in stored["files"]) != sorted((f.path, f.size) for f in tree.files):
        raise _changed(source, version)
    digests = {f["path"]: f["sha256"] for f in stored["files"]}
    for entry in tree.files:
        with open(entry.source, "rb") as handle:
            if hashlib.file_digest(handle, "sha256").hexdigest() != digests[entry.path]:
                raise _changed(source, version)


def _changed(source, version) -> CdpError:
    return CdpError(f"the source {source} changed since {version} was distributed; "
                    "distribute it as a new version instead")


def plan_removal(site: Site, package: str, version: str | None = None, on=()) -> list[str]:
    """The distribution points that hold the package (version); deletes nothing."""
    _keys(site, package)
    if version is not None:
        layout.check_version(version)
    stores = distribution.Stores(site)
    names = []
    for name in distribution.holders(site, on):
        store = stores.of(name, package)
        if store.exists() and (version is None or version in store.versions()):
            names.append(name)
    if not names:
        what = f"{package} {version}" if version else package
        raise UsageError(f"{what} is not on any distribution point" + (" named with --on" if on else ""))
    return names


def remove(site: Site, package: str, version: str | None, names: list[str], info: Info = _quiet) -> dict:
    """Delete a version (or the whole package) from ``names`` and collect chunks no remaining
    version uses. Refused while a distribution or repair of the package is in flight."""
    keys = _keys(site, package)
    stores = distribution.Stores(site)
    removed = []
    with distribution.package_lock(site, package, exclusive=True):
        for name in names:
            try:
                removed.append(_remove_from(site, stores.of(name, package), name, keys, version, info))
            except CdpError as exc:
                removed.append({"distribution_point": name, "version": version, "error": str(exc)})
        done = [r["distribution_point"] for r in removed if not r.get("error")]
        _forget(site, package, version, done)
    return {"package": package, "version": version, "removed": removed,
            "ok": not any(r.get("error") for r in removed)}


def _remove_from(site: Site, store, name: str, keys, version: str | None, info: Info) -> dict:
    package = keys.package_id
    index = ChunkIndex(site.state, store.location)
    if version is None:
        info(f"{name}: deleting package {package}")
        stored, packs = store.inventory()
        store.delete()
        index.replace({})
        return {"distribution_point": name, "version": None, "current": None, "error": None,
                "chunks_deleted": len(stored), "bytes_freed": sum(packs.values())}
    remaining = [v for v in store.versions() if v != version]
    current = store.current()
    if current == version or current is None:  # never leave current on a version about to go
        current = _newest(site, package, remaining)
        store.set_current(current) if current else store.delete_current()
    store.delete_manifest(version)
    collected = store.collect_garbage(keys)
    index.replace(store.chunk_sizes())
    info(f"{name}: removed {package} {version}, freed {collected.bytes_freed:,} bytes")
    return {"distribution_point": name, "version": version, "current": current, "error": None,
            "chunks_deleted": len(collected.deleted), "bytes_freed": collected.bytes_freed}


def _forget(site: Site, package: str, version: str | None, names: list[str]) -> None:
    """Drop the placements on ``names``; a version no point holds any more leaves the site record."""
    only = "" if version is None else " AND version = ?"
    params = () if version is None else (version,)
    with site.state.tx() as db:
        db.executemany(f"DELETE FROM placements WHERE package_id = ? AND distribution_point = ?{only}",
                       [(package, name, *params) for name in names])
        db.execute(f"DELETE FROM package_versions WHERE package_id = ?{only} AND NOT EXISTS ("
                   "SELECT 1 FROM placements p WHERE p.package_id = package_versions.package_id"
                   " AND p.version = package_versions.version)", (package, *params))


def _newest(site: Site, package: str, versions: list[str]) -> str | None:
    """The most recently distributed of ``versions`` (by the site's record, else by name)."""
    if not versions:
        return None
    recorded = list(distribution.recorded_versions(site, package))
    for candidate in reversed(recorded):
        if candidate in versions:
            return candidate
    return max(versions)
