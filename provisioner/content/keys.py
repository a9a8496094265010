"""Package keys: a random content key and a separate id key per package, kept in the site state
wrapped with the site master key (AES key wrap, RFC 3394).

A package's keys are created once and never change: every version of the package uses them,
which is what lets a new version reuse the chunks an older one stored. They leave the site only
inside access bundles (:meth:`PackageKeys.export`), never towards storage or the front end.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from provisioner.content.crypto import KEY_BYTES
from provisioner.content.layout import check_package_id
from provisioner.errors import CdpError, UsageError
from provisioner.site.state import State


@dataclass(frozen=True)
class PackageKeys:
    """The keys of one package. Their values never appear in repr() or logs."""

    package_id: str
    content_key: bytes = field(repr=False)
    id_key: bytes = field(repr=False)

    def export(self) -> dict:
        """The keys for an access bundle: base64 (standard alphabet) of the raw 32-byte keys."""
        return {
            "package": self.package_id,
            "content_key": base64.b64encode(self.content_key).decode(),
            "id_key": base64.b64encode(self.id_key).decode(),
        }

    @classmethod
    def from_export(cls, data: dict) -> PackageKeys:
        """The inverse of :meth:`export` (a client reading its access bundle)."""
        try:
            keys = cls(
                check_package_id(data["package"]),
                base64.b64decode(data["content_key"], validate=True),
                base64.b64decode(data["id_key"], validate=True),
            )
        except (KeyError, TypeError, ValueError):
            raise CdpError("the package keys in the access bundle are malformed") from None
        if len(keys.content_key) != KEY_BYTES or len(keys.id_key) != KEY_BYTES:
            raise CdpError(f"the keys of package {keys.package_id} in the access bundle have the wrong length")
        return keys


def get_or_create(state: State, master_key: bytes, package_id: str) -> PackageKeys:
    """The keys of ``package_id``, created (random) on first use, the same ever after."""
    check_package_id(package_id)
    with state.tx() as db:
        db.execute(
            "INSERT OR IGNORE INTO package_keys(package_id, content_key_wrapped, id_key_wrapped)"
            " VALUES (?, ?, ?)",
            (
                package_id,
                aes_key_wrap(master_key, secrets.token_bytes(KEY_BYTES)),
                aes_key_wrap(master_key, secrets.token_bytes(KEY_BYTES)),
            ),
        )
    found = load(state, master_key, package_id)
    assert found is not None  # inserted above, and keys are never deleted by this module
    return found


def load(state: State, master_key: bytes, package_id: str) -> PackageKeys | None:
    """The keys of ``package_id``, or None if the site never distributed it."""
    rows = state.query(
        "SELECT content_key_wrapped, id_key_wrapped FROM package_keys WHERE package_id = ?", (package_id,)
    )
    if not rows:
        return None
    try:
        return PackageKeys(
            package_id,
            aes_key_unwrap(master_key, rows[0]["content_key_wrapped"]),
            aes_key_unwrap(master_key, rows[0]["id_key_wrapped"]),
        )
    except InvalidUnwrap:
        raise CdpError(
            f"the keys of package {package_id} do not unwrap with the site master key"
            " (was keys/master.key replaced?)"
        ) from None


def require(state: State, master_key: bytes, package_id: str) -> PackageKeys:
    """The keys of a package the site has distributed (UsageError if it has none)."""
    keys = load(state, master_key, package_id)
    if keys is None:
        raise UsageError(f"the site has no keys for package {package_id}: it was never distributed from here")
    return keys
