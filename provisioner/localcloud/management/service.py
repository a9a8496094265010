"""The management endpoint as a service of the local cloud: start, recognise, stop, describe.

:class:`provisioner.localcloud.LocalCloud` keeps one record per service in ``cloud.json``
(``{"pid", "port"}``); this class acts on the ``management`` record. The process is
``python -m provisioner.localcloud.management --home HOME --port PORT``, recognised by its
``--home`` argument. Its port is kept across restarts when free, so the endpoint URL the
site recorded stays valid.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

from provisioner.errors import CdpError
from provisioner.localcloud import processes

HOST = "127.0.0.1"
START_TIMEOUT = 60.0


class ManagementService:
    def __init__(self, home: Path, local_dir: Path, ca_bundle: Path) -> None:
        self.home = home
        self.local_dir = local_dir
        self.ca_bundle = ca_bundle

    @property
    def marker(self) -> tuple[str, ...]:
        """The arguments that only this site's endpoint carries."""
        return ("--home", str(self.home))

    @property
    def log(self) -> Path:
        return self.local_dir / "management.log"

    def pid(self, record: dict[str, Any]) -> int | None:
        """The pid of our running endpoint, or None (no record, dead, or a reused pid)."""
        pid = record.get("pid")
        return pid if processes.is_ours(pid, self.marker) else None

    def start(self, record: dict[str, Any], save: Callable[[], None],
              progress: Callable[[str], None]) -> None:
        """Start the endpoint (after Azurite); ``record`` gets pid and port, saved at once."""
        for stray in processes.find(self.marker):
            progress(f"stopping a stray management endpoint of this site (pid {stray})")
            processes.stop(stray)
        port = processes.pick_port(record.get("port"))
        if record.get("port") and port != record["port"]:
            progress(f"port {record['port']} is taken; the management endpoint moves to port {port}")
        offset = processes.log_size(self.log)
        progress(f"starting the management endpoint on {endpoint(port)}")
        pid = processes.spawn(command(sys.executable, home=self.home, port=port),
                              env=dict(os.environ), cwd=self.local_dir, log_path=self.log)
        record.update(pid=pid, port=port)
        save()  # recorded at once, so that even an interrupted start can be stopped
        try:
            processes.wait_ready(pid, answer_check(port, self.ca_bundle),
                                 what="the management endpoint", log_path=self.log,
                                 log_offset=offset, timeout=START_TIMEOUT)
        except CdpError:
            record["pid"] = None
            save()
            raise

    def stop(self, record: dict[str, Any], progress: Callable[[str], None]) -> list[int]:
        """Stop it (it stops its front ends first) and any stray of ours; return the pids."""
        pid = self.pid(record)
        stopped = []
        for each in ([pid] if pid else []) + [p for p in processes.find(self.marker) if p != pid]:
            progress(f"stopping the management endpoint (pid {each})")
            processes.stop(each)
            stopped.append(each)
        record["pid"] = None  # the port stays: it is reused on the next start
        return stopped

    def status(self, record: dict[str, Any]) -> dict[str, Any]:
        pid = self.pid(record)
        return {"running": pid is not None, "pid": pid, "port": record.get("port"),
                "endpoint": endpoint(record["port"]) if pid else None, "log": str(self.log)}


def endpoint(port: int) -> str:
    return f"https://{HOST}:{port}"


def command(python: str, *, home: Path, port: int) -> list[str]:
    """The command line of the endpoint; ``home`` is also how the process is recognised."""
    return [python, "-m", "provisioner.localcloud.management", "--home", str(home), "--port", str(port)]


def answer_check(port: int, ca_bundle: Path) -> Callable[[], None]:
    """Raises OSError until the endpoint answers over TLS verified with the local CA (any
    HTTP answer counts: an unauthenticated request gets 401)."""
    return processes.https_probe(HOST, port, ca_bundle, "/subscriptions")
