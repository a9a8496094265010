"""Front-end processes: what a ``Microsoft.Web/sites`` resource becomes on the local cloud.

Each site runs ``python -m provisioner.frontend`` over HTTPS with the local cloud's server
certificate, on a port of its own that it keeps across restarts and redeploys, with the
site's app settings as environment variables (as App Service passes them). Its folder
``management/sites/NAME/`` is its working directory, holds its log, and marks the process
as ours (the ``--data-dir`` argument), so a stale pid never makes us signal a stranger.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from provisioner.localcloud import processes
from provisioner.localcloud.certs import CertPaths

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
# The site's environment is its app settings, not the administrator's site.
HIDDEN_ENV = ("CDP_HOME",)


class FrontEnds:
    """Start, restart and stop the front-end processes of one local cloud."""

    def __init__(self, folder: Path, certs: CertPaths) -> None:
        self.folder = folder
        self.certs = certs
        self._package: Path | None = None

    def app_package(self) -> Path:
        """The run-from-package zip every local site runs, as a web app on Azure would: built
        by the toolkit once per endpoint process, named by its hash (its bytes are deterministic)."""
        if self._package is None:
            from provisioner.frontend.package import build_app_package

            built = build_app_package(self.folder.parent / "app" / "frontend.zip")
            digest = hashlib.sha256(built.read_bytes()).hexdigest()[:16]
            named = built.with_name(f"frontend-{digest}.zip")
            os.replace(built, named)
            self._package = named
        return self._package

    def data_dir(self, name: str) -> Path:
        return self.folder / name.lower()

    def running(self, local: dict[str, Any] | None) -> bool:
        return bool(local) and processes.is_ours(local.get("pid"), marker(local["dataDir"]))

    def run(self, name: str, settings: dict[str, str], extra_env: dict[str, str],
            local: dict[str, Any] | None) -> dict[str, Any]:
        """Make site ``name`` run with ``settings``: keep a process that already does, else
        (re)start it on its previous port if free. Returns the new ``local`` record."""
        fingerprint = _fingerprint(settings, {**extra_env, "package": self.app_package().name})
        if self.running(local) and local.get("fingerprint") == fingerprint:
            return local
        if local and self.running(local):
            processes.stop(local["pid"])
        data_dir = self.data_dir(name)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_path = data_dir / "frontend.log"
        port = processes.pick_port((local or {}).get("port"))
        env = {k: v for k, v in os.environ.items() if k not in HIDDEN_ENV}
        env.update(extra_env)
        env["PYTHONPATH"] = str(self.app_package())  # the app package's code, not the repo's
        env["WEBSITE_HOSTNAME"] = f"{HOST}:{port}"
        env.update(settings)
        argv = [sys.executable, "-m", "provisioner.frontend", "--host", HOST, "--port", str(port),
                "--cert", str(self.certs.server_cert), "--key", str(self.certs.server_key),
                "--data-dir", str(data_dir)]
        offset = processes.log_size(log_path)
        pid = processes.spawn(argv, env=env, cwd=data_dir, log_path=log_path)
        processes.wait_ready(pid, health_check(port, self.certs.ca_cert), what=f"front end {name}",
                             log_path=log_path, log_offset=offset, timeout=START_TIMEOUT)
        return {"pid": pid, "port": port, "dataDir": str(data_dir), "log": str(log_path),
                "fingerprint": fingerprint}

    def stop(self, local: dict[str, Any] | None) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and wait until it is gone."""
        if self.running(local):
            processes.stop(local["pid"])


def marker(data_dir: str) -> tuple[str, ...]:
    """The arguments that only this site's process carries."""
    return ("--data-dir", str(data_dir))


def host_name(local: dict[str, Any]) -> str:
    return f"{HOST}:{local['port']}"


def health_check(port: int, ca_bundle: Path) -> Callable[[], None]:
    """Raises OSError until ``GET /health`` answers 200 over TLS verified with the local CA."""
    return processes.https_probe(HOST, port, ca_bundle, "/health", want_status=200)


def _fingerprint(settings: dict[str, str], extra_env: dict[str, str]) -> str:
    canonical = json.dumps([settings, extra_env], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
