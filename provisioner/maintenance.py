"""Content maintenance on distribution points: list, validate, redistribute (repair), remove."""

from __future__ import annotations

from typing import Callable

from provisioner import distribution
from provisioner.content import keys as package_keys
from provisioner.content import layout
from provisioner.content import manifest as manifest_mod
from provisioner.content.store import ChunkIndex, MissingContent
from provisioner.content.upload import PackageVersion, Target, distribute as upload
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


def list_content(site: Site, package: str | None = None, on=()) -> dict:
    """Packages, versions and stored sizes per distribution point (read from storage)."""
    packages = [package] if package else distribution.known_packages(site)
    if package:
        _keys(site, package)
    rows = []
    for name in distribution.holders(site, on):
        for pkg in packages:
            store = distribution.store_of(site, name, pkg)
            if not store.exists():
                continue
            sizes = store.chunk_sizes()
            ChunkIndex(site.state, store.location).replace(sizes)
            rows.append({"distribution_point": name, "package": pkg, "versions": store.versions(),
                         "current": store.current(), "stored_bytes": sum(sizes.values()),
                         "chunks": len(sizes)})
    return {"content": rows}


def _versions(store, version: str | None) -> list[str]:
    if version is None:
        return store.versions()
    layout.check_version(version)
    return [version]


def validate(site: Site, package: str, version: str | None = None, on=(), info: Info = _quiet) -> dict:
    """Decrypt every stored chunk of the version(s) and check it against its id."""
    keys = _keys(site, package)
    reports = []
    for name in distribution.holders(site, on):
        store = distribution.store_of(site, name, package)
        if not store.exists():
            if on:
                reports.append({"distribution_point": name, "version": version, "ok": False,
                                "error": "package not on this distribution point"})
            continue
        for ver in _versions(store, version):
            info(f"{name}: validating {package} {ver}")
            try:
                document = manifest_mod.unseal(store.get_manifest(ver), keys, ver)
            except MissingContent:
                reports.append({"distribution_point": name, "version": ver, "ok": False,
                                "error": "manifest missing"})
                continue
            except CdpError as exc:
                reports.append({"distribution_point": name, "version": ver, "ok": False, "error": str(exc)})
                continue
            damaged = store.damaged_chunks(keys, document["chunks"])
            reports.append({"distribution_point": name, "version": ver, "ok": not damaged,
                            "chunks": len(document["chunks"]),
                            "missing": sorted(c for c, p in damaged.items() if p == "missing"),
                            "corrupt": sorted(c for c, p in damaged.items() if p == "corrupt")})
    return {"package": package, "ok": all(r["ok"] for r in reports), "reports": reports}


def redistribute(site: Site, package: str, version: str | None = None, on=(), info: Info = _quiet) -> dict:
    """Repair missing or corrupt chunks (and manifests) from the site's source of each version."""
    keys = _keys(site, package)
    checked = validate(site, package, version, on, info)
    repaired = []
    for report in checked["reports"]:
        if report["ok"]:
            continue
        name, ver = report["distribution_point"], report["version"]
        source, content_type = distribution.source_of(site, package, ver)
        tree = manifest_mod.scan(source)
        store = distribution.store_of(site, name, package)
        _check_same_source(store, keys, ver, tree, source)
        bad = set(report.get("missing", [])) | set(report.get("corrupt", []))
        info(f"{name}: repairing {package} {ver} ({len(bad)} chunks) from {source}")
        outcome = upload(tree, PackageVersion(package, ver, content_type, keys),
                         [Target(name, store, ChunkIndex(site.state, store.location))],
                         repair=bad, make_current=store.current() in (None, ver))
        result = outcome.results[0].to_json()
        repaired.append({"distribution_point": name, "version": ver, **result})
    failed = [r for r in repaired if r["status"] != "uploaded"]
    return {"package": package, "repaired": repaired, "ok": not failed}


def _check_same_source(store, keys, version, tree, source) -> None:
    """Refuse to 'repair' a version from a source that no longer matches what was distributed."""
    try:
        stored = manifest_mod.unseal(store.get_manifest(version), keys, version)
    except (MissingContent, CdpError):
        return  # no readable manifest to compare with: the rebuilt one replaces it
    wanted = {(f["path"], f["size"]) for f in stored["files"]}
    have = {(f.path, f.size) for f in tree.files}
    if wanted != have:
        raise CdpError(f"the source {source} changed since {version} was distributed; "
                       "distribute it as a new version instead")


def remove(site: Site, package: str, version: str | None = None, on=(), info: Info = _quiet) -> dict:
    """Delete a version (or the whole package) and collect chunks no remaining version uses."""
    keys = _keys(site, package)
    if version is not None:
        layout.check_version(version)
    removed = []
    for name in distribution.holders(site, on):
        store = distribution.store_of(site, name, package)
        if not store.exists():
            continue
        if version is None:
            info(f"{name}: deleting package {package}")
            store.container.delete_container()
            ChunkIndex(site.state, store.location).replace({})
            removed.append({"distribution_point": name, "version": None, "bytes_freed": None})
            continue
        if version not in store.versions():
            continue
        remaining = [v for v in store.versions() if v != version]
        if store.current() == version:
            newest = _newest(site, package, remaining)
            store.set_current(newest) if newest else store.delete_current()
        store.delete_manifest(version)
        collected = store.collect_garbage(keys)
        ChunkIndex(site.state, store.location).replace(store.chunk_sizes())
        info(f"{name}: removed {package} {version}, freed {collected.bytes_freed:,} bytes")
        removed.append({"distribution_point": name, "version": version,
                        "bytes_freed": collected.bytes_freed, "chunks_deleted": len(collected.deleted)})
    with site.state.tx() as db:
        if version is None:
            db.execute("DELETE FROM placements WHERE package_id = ?", (package,))
            db.execute("DELETE FROM package_versions WHERE package_id = ?", (package,))
        else:
            db.execute("DELETE FROM placements WHERE package_id = ? AND version = ?", (package, version))
            db.execute("DELETE FROM package_versions WHERE package_id = ? AND version = ?", (package, version))
    if not removed:
        raise UsageError(f"{package}{' ' + version if version else ''} is not on any distribution point")
    return {"package": package, "version": version, "removed": removed}


def _newest(site: Site, package: str, versions: list[str]) -> str | None:
    """The most recently distributed of ``versions`` (by the site's record, else by name)."""
    if not versions:
        return None
    rows = site.state.query(
        "SELECT version FROM package_versions WHERE package_id = ? ORDER BY created_at DESC, rowid DESC",
        (package,))
    for row in rows:
        if row["version"] in versions:
            return row["version"]
    return versions[-1]
