"""The demo story, as a library function: start the local cloud, render a distribution point."""

from __future__ import annotations

import time
from typing import Callable

from provisioner import deploy
from provisioner.localcloud import LocalCloud
from provisioner.site import Site

DEMO_NAME = "demo"


def run(progress: Callable[[str], None] = lambda message: None) -> dict:
    started = time.monotonic()
    site = Site.open()
    cloud = LocalCloud(site)
    progress("starting the local cloud (Azurite over HTTPS)...")
    status = cloud.start()
    progress(f"  blob endpoint {status['blob_endpoint']}")
    out_dir = site.home / "demo" / DEMO_NAME
    progress(f"rendering distribution point {DEMO_NAME!r} into {out_dir} ...")
    rendered = deploy.render_for(site, DEMO_NAME)
    rendered.write(out_dir)
    return {
        "local_cloud": {"running": status["running"], "blob_endpoint": status["blob_endpoint"]},
        "distribution_point": DEMO_NAME,
        "rendered": str(out_dir),
        "files": sorted(rendered.files),
        "template_hash": rendered.template_hash,
        "would_deploy": _plan(rendered),
        "seconds": round(time.monotonic() - started, 1),
    }


def _plan(rendered) -> list[dict]:
    """What a provision would create, read from the rendered templates."""
    plan = []
    for name in ("resource-group.json", "distribution-point.json"):
        for resource in rendered.files[name]["resources"]:
            plan.append({"template": name, "type": resource["type"],
                         "name": deploy.resource_name(resource, rendered)})
    return plan


def describe(summary: dict) -> str:
    lines = [
        f"local cloud: running, blob endpoint {summary['local_cloud']['blob_endpoint']}",
        f"distribution point {summary['distribution_point']!r} rendered to {summary['rendered']}",
        f"template hash {summary['template_hash']}; a provision would deploy:",
    ]
    lines += [f"  {item['type']}  {item['name']}" for item in summary["would_deploy"]]
    lines.append(f"done in {summary['seconds']} s")
    return "\n".join(lines)
