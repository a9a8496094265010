"""Content types a cloud distribution point takes, and the seed's reasons for those it does not."""

from __future__ import annotations

from provisioner.errors import UsageError

SUPPORTED = ("application", "package", "os-upgrade", "third-party-update")

# Configuration Manager: "Use a cloud distribution point", Specifications and Limitations.
UNSUPPORTED = {
    "app-v": "a cloud distribution point doesn't support App-V streaming applications",
    "m365-apps-update": "a cloud distribution point doesn't support content for Microsoft 365 Apps updates",
    "boot-image": "you can't use a cloud distribution point for PXE or multicast-enabled deployments",
    "pxe": "you can't use a cloud distribution point for PXE or multicast-enabled deployments",
    "multicast": "you can't use a cloud distribution point for PXE or multicast-enabled deployments",
    "run-from-dp": (
        "a cloud distribution point doesn't support package deployments with the option to "
        "run program from distribution point; use download content and run locally"
    ),
}
MICROSOFT_UPDATE = "microsoft-update"
MICROSOFT_UPDATE_REASON = (
    "clients get Microsoft software updates from the Microsoft Update cloud service at no charge; "
    "storing them on a cloud distribution point costs money for content clients never use "
    "(pass --force to distribute anyway)"
)


def check(content_type: str, force: bool = False) -> str:
    """Return ``content_type`` if a cloud distribution point takes it, else raise UsageError."""
    if content_type in SUPPORTED:
        return content_type
    if content_type == MICROSOFT_UPDATE:
        if force:
            return content_type
        raise UsageError(f"content type {MICROSOFT_UPDATE} refused: {MICROSOFT_UPDATE_REASON}")
    if content_type in UNSUPPORTED:
        raise UsageError(f"content type {content_type} refused: {UNSUPPORTED[content_type]}")
    known = ", ".join(SUPPORTED)
    raise UsageError(f"unknown content type {content_type!r}: use one of {known}")
