"""What ``cdp status`` watches: stored bytes and this month's egress per distribution point,
against the thresholds of cdp.toml ``[alerts]`` (as Configuration Manager: 2,000 GB stored,
10,000 GB a month out, warning at 50 %, critical at 90 %), read live."""

from __future__ import annotations

from provisioner.config import GB, Alerts


def level(percent: float, alerts: Alerts) -> str | None:
    if percent >= alerts.critical_percent:
        return "critical"
    if percent >= alerts.warning_percent:
        return "warning"
    return None


def usage(used: int, threshold_gb: float, alerts: Alerts) -> dict:
    threshold = int(threshold_gb * GB)
    percent = round(100.0 * used / threshold, 2) if threshold else 0.0
    return {"bytes": used, "threshold_bytes": threshold, "percent": percent,
            "alert": level(percent, alerts)}


def storage(site, record) -> dict:
    """Stored bytes (the site's chunk index, refreshed by every distribute and content list)
    against the storage threshold."""
    from provisioner.content.store import ChunkIndex

    stored = 0
    if record.blob_endpoint:
        stored = ChunkIndex.stored_bytes_under(site.state, record.blob_endpoint.rstrip("/") + "/")
    found = usage(stored, site.config.alerts.storage_threshold_gb, site.config.alerts)
    return {"stored_bytes": found.pop("bytes"), **found}


def egress_of(site, record) -> dict | None:
    """This month's egress of a deployed distribution point, read live from its storage;
    ``{"error": ...}`` when storage cannot be read (a stopped local cloud, say)."""
    from azure.core.exceptions import AzureError

    from provisioner import storage as storage_mod
    from provisioner.errors import CdpError

    if record.state != "Succeeded" or not record.blob_endpoint:
        return None
    try:
        return egress(storage_mod.blob_service(site, record), site.config.alerts)
    except (CdpError, AzureError) as exc:
        return {"error": str(exc).splitlines()[0]}


def egress(service, alerts: Alerts, month: str | None = None) -> dict:
    """This month's egress of one distribution point, from its front-end instances' counters."""
    from provisioner.frontend import control

    month = month or control.month_of()
    total = sum(control.read_egress(service, month).values())
    result = usage(total, alerts.egress_threshold_gb, alerts)
    result["month"] = month
    if alerts.egress_hard_cap_gb is not None:
        result["hard_cap_bytes"] = int(alerts.egress_hard_cap_gb * GB)
    return result
