"""Azurite, the storage half of the local cloud: where it is installed, how it is started,
when it answers, and the storage accounts it serves.

Azurite is pinned by ``azurite/package.json`` and its lock file and installed with ``npm ci``
on first use. It runs the blob service only, over HTTPS, with IP-style URLs
(``https://127.0.0.1:PORT/ACCOUNT``) and its accounts from ``AZURITE_ACCOUNTS``.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import provisioner
from provisioner.errors import CdpError, UsageError
from provisioner.localcloud import processes
from provisioner.site.keys import write_private

EMULATOR_ACCOUNT = "devstoreaccount1"
# The well-known key of Azurite's default account (published by Microsoft; not a secret).
EMULATOR_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
                "KBHBeksoGMGw==")
ACCOUNT_RULE = "a storage account name is 3 to 24 lowercase letters and digits"
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
HOST = "127.0.0.1"
START_TIMEOUT = 60.0
NPM_TIMEOUT = 600


def azurite_dir() -> Path:
    """The folder with Azurite's package.json: ``CDP_AZURITE_DIR`` or ``azurite/`` beside the package."""
    override = os.environ.get("CDP_AZURITE_DIR")
    if override:
        return Path(override).expanduser().resolve()
    return Path(provisioner.__file__).resolve().parents[1] / "azurite"


def ensure_installed(progress: Callable[[str], None]) -> Path:
    """Return the ``azurite-blob`` executable, running ``npm ci`` first if it is missing."""
    folder = azurite_dir()
    executable = folder / "node_modules" / ".bin" / "azurite-blob"
    if executable.exists():
        return executable
    package = folder / "package.json"
    if not package.exists():
        raise CdpError(f"Azurite is not available: {package} does not exist "
                       "(set CDP_AZURITE_DIR to the folder with its package.json)")
    npm = shutil.which("npm")
    if npm is None:
        raise CdpError("npm is not installed; the local cloud needs Node.js and npm to run Azurite")
    # Several cdp processes (of several sites) may share this folder: install once, under a lock.
    with open(package, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not executable.exists():
            progress(f"installing Azurite in {folder} (npm ci, first use only)")
            try:
                result = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True,
                    text=True, timeout=NPM_TIMEOUT, check=False,
                )
            except subprocess.TimeoutExpired:
                raise CdpError(f"npm ci in {folder} did not finish within {NPM_TIMEOUT} s") from None
            if result.returncode != 0 or not executable.exists():
                tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-5:])
                raise CdpError(f"npm ci in {folder} failed (exit {result.returncode}): {tail}")
    return executable


def command(executable: Path, *, location: Path, port: int, cert: Path, key: Path) -> list[str]:
    """The command line of the blob service; ``location`` is also how we recognise the process."""
    return [
        str(executable),
        "--blobHost", HOST,
        "--blobPort", str(port),
        "--location", str(location),
        "--cert", str(cert),
        "--key", str(key),
        # The SDK speaks newer API versions than Azurite knows; the features we use exist.
        "--skipApiVersionCheck",
        # The account is the first path segment: https://127.0.0.1:PORT/ACCOUNT.
        "--disableProductStyleUrl",
        "--disableTelemetry",
        "--silent",
    ]


def environment(accounts: dict[str, str], compile_cache: Path) -> dict[str, str]:
    """The environment of the Azurite process: ours plus ``AZURITE_ACCOUNTS``.

    ``NODE_COMPILE_CACHE`` (Node 22.1+; ignored by older Node) makes restarts start faster.
    """
    env = dict(os.environ)
    env["AZURITE_ACCOUNTS"] = ";".join(f"{name}:{key}" for name, key in accounts.items())
    env.setdefault("NODE_COMPILE_CACHE", str(compile_cache))
    return env


def blob_endpoint(port: int, account: str = EMULATOR_ACCOUNT) -> str:
    return f"https://{HOST}:{port}/{account}"


def answer_check(port: int, ca_bundle: Path) -> Callable[[], None]:
    """Raises OSError until the blob service answers over verified TLS (any HTTP answer
    counts: an unsigned request gets 403)."""
    return processes.https_probe(HOST, port, ca_bundle, f"/{EMULATOR_ACCOUNT}?comp=list")

# -- storage accounts --------------------------------------------------------------------------


def check_account_name(name: str) -> str:
    if not isinstance(name, str) or not _ACCOUNT.match(name):
        raise UsageError(f"invalid storage account name {name!r}: {ACCOUNT_RULE}")
    return name


def new_account_key() -> str:
    """A random account key as Azure makes them: 64 bytes, base64."""
    return base64.b64encode(secrets.token_bytes(64)).decode()


def load_accounts(path: Path) -> dict[str, str]:
    """The accounts file (name -> key), with the emulator's default account always first."""
    accounts = {EMULATOR_ACCOUNT: EMULATOR_KEY}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return accounts
    except (ValueError, UnicodeDecodeError):
        raise CdpError(f"the local accounts file {path} is damaged (not JSON)") from None
    stored = data.get("accounts") if isinstance(data, dict) else None
    if not isinstance(stored, dict):
        raise CdpError(f"the local accounts file {path} is damaged (no accounts table)")
    accounts.update(stored)
    return accounts


def save_accounts(path: Path, accounts: dict[str, str]) -> None:
    """Replace the accounts file atomically; it holds keys, so it is readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write_private(tmp, json.dumps({"accounts": accounts}, indent=2).encode())
    os.replace(tmp, path)
