"""Site key files: created once, mode 0600, never logged."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from provisioner.errors import CdpError


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable only by its owner (fails if it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def secret_file(path: Path, nbytes: int) -> bytes:
    """Read the random secret at ``path``, creating it with ``nbytes`` random bytes if absent."""
    try:
        write_private(path, secrets.token_bytes(nbytes))
    except FileExistsError:
        pass
    data = path.read_bytes()
    if len(data) != nbytes:
        raise CdpError(f"key file {path} is damaged: expected {nbytes} bytes, found {len(data)}")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CdpError(f"key file {path} is readable by others (mode {mode:o}); chmod 600 it")
    return data


def replace_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file, fsync, rename), readable only by
    its owner from the first byte; replaces an older file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
