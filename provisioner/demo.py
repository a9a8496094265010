"""The demo story, as a library function: the whole life of a distribution point on the
local cloud, start to finish.

start the local cloud -> provision -> distribute a generated package -> issue an access
bundle -> fetch as a client -> verify the bytes -> tear down.
"""

from __future__ import annotations

import filecmp
import os
import time
from pathlib import Path
from typing import Callable

from provisioner import access, deploy, distribution
from provisioner.errors import CdpError
from provisioner.localcloud import LocalCloud
from provisioner.site import Site

DEMO_NAME = "demo"
PACKAGE = "demo-app"


def _sample(folder: Path) -> Path:
    """A small sample package: a few files in nested folders, one executable."""
    root = folder / "demo-app"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "docs" / "licences").mkdir(parents=True, exist_ok=True)
    (root / "bin" / "install.sh").write_text("#!/bin/sh\necho installing demo-app\n")
    os.chmod(root / "bin" / "install.sh", 0o755)
    (root / "docs" / "read me.txt").write_text("cdp demo package\n")
    (root / "docs" / "licences" / "licence.txt").write_text("MIT\n")
    (root / "payload.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    return root


def run(progress: Callable[[str], None] = lambda message: None) -> dict:
    started = time.monotonic()
    site = Site.open()
    steps: list[dict] = []

    def step(name: str, **facts) -> None:
        steps.append({"step": name, "seconds": round(time.monotonic() - started, 1), **facts})

    progress("1. starting the local cloud (Azurite + management endpoint, HTTPS)")
    status = LocalCloud(site).start()
    step("local cloud", blob_endpoint=status["blob_endpoint"],
         management_endpoint=status.get("management_endpoint"))

    progress(f"2. provisioning distribution point {DEMO_NAME!r}")
    provisioned = deploy.provision(site, DEMO_NAME, "local", progress=progress)
    record = deploy.status(site, DEMO_NAME)["distribution_points"][0]
    step("provision", changed=provisioned["changed"], service_url=record["service_url"],
         storage_account=record["storage_account"], instances=record["instances"])

    work = site.home / "demo"
    source = _sample(work / "source")
    version = time.strftime("%Y%m%d.%H%M%S")
    progress(f"3. distributing {PACKAGE} {version} (encrypted on the site)")
    result = distribution.distribute(site, distribution.Request(
        source, PACKAGE, version, "application", (DEMO_NAME,)), info=progress)
    upload = result["results"][0]
    if upload["status"] != "uploaded":
        raise CdpError(f"demo: distribution failed: {upload['error']}")
    step("distribute", version=version, bytes=upload["bytes_total"], chunks=upload["chunks_total"])

    summary = {"distribution_point": DEMO_NAME, "package": PACKAGE, "version": version,
               "steps": steps}
    summary.update(_client_story(site, source, work, progress, step))

    progress(f"6. tearing down {DEMO_NAME!r}")
    deploy.teardown(site, DEMO_NAME, progress=progress)
    step("teardown")
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def _client_story(site, source, work, progress, step) -> dict:
    """Issue an access bundle and fetch the package as a client; compare the bytes."""
    from provisioner.client import fetch as client_fetch

    progress("4. issuing an access bundle for client demo-client (24 h token)")
    bundle_path = work / "demo-client.access.json"
    bundle = access.build_bundle(site, "demo-client", [PACKAGE])
    access.write_bundle(bundle, bundle_path)
    step("token", expires_at=bundle["expires_at"])

    dest = work / "client"
    progress(f"5. fetching {PACKAGE} as the client into {dest}")
    fetched = client_fetch.fetch(access.load_bundle(bundle_path), PACKAGE, dest, report=progress)
    same = _identical(source, dest)
    if not same:
        raise CdpError("demo: the fetched files differ from the source")
    step("fetch", source=fetched.source, bytes_downloaded=fetched.bytes_downloaded, identical=same)
    return {"fetched_into": str(dest), "identical": same}


def _identical(left: Path, right: Path) -> bool:
    compare = filecmp.dircmp(left, right, ignore=[".cdp"])

    def walk(c) -> bool:
        if c.left_only or c.right_only or c.funny_files:
            return False
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        if mismatch or errors:
            return False
        for name in c.common_files:
            if os.stat(Path(c.left) / name).st_mode != os.stat(Path(c.right) / name).st_mode:
                return False
        return all(walk(sub) for sub in c.subdirs.values())

    return walk(compare)


def describe(summary: dict) -> str:
    lines = [f"cdp demo: {summary['package']} {summary['version']} through distribution point "
             f"{summary['distribution_point']!r}"]
    for item in summary["steps"]:
        facts = ", ".join(f"{k}={v}" for k, v in item.items() if k not in ("step", "seconds"))
        lines.append(f"  [{item['seconds']:5.1f} s] {item['step']:<12} {facts}")
    lines.append(f"fetched bytes identical to the source: {summary['identical']}")
    lines.append(f"done in {summary['seconds']} s")
    return "\n".join(lines)
