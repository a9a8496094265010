"""The local cloud: Azurite (storage) and the local Azure Resource Manager endpoint
(:mod:`provisioner.localcloud.management`), both over HTTPS on this machine, managed per site.

Everything lives in the site's ``local/`` folder::

    cloud.json      the services and their pid and port   {"services": {"azurite": {...},
                                                                         "management": {...}}}
    cloud.lock      serialises cdp processes acting on the local cloud at once
    accounts.json   the storage accounts Azurite serves, with their keys (mode 0600)
    certs/          the local CA (ca.pem is the bundle clients trust) and the server certificate
    azurite/        Azurite's data, on disk, surviving stop and start
    azurite.log     Azurite's output
    management/     the management endpoint's state (resource groups, deployments, resources)
    management.log  its output

Each distribution point gets its own storage account with its own key, as in Azure.
Azurite reads its accounts when it starts, so adding or removing one restarts it on the same
port. The management endpoint starts after Azurite and stops before it; it stops and starts
the front-end processes of the distribution points with itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from provisioner.errors import CdpError, UsageError
from provisioner.localcloud import azurite, certs, processes
from provisioner.localcloud.azurite import EMULATOR_ACCOUNT
from provisioner.site import Site

NOT_RUNNING = "the local cloud is not running; start it with `cdp local start`"

__all__ = ["LocalCloud", "EMULATOR_ACCOUNT", "NOT_RUNNING"]


class LocalCloud:
    """The local cloud of one site. Every method is safe to call from several cdp processes."""

    def __init__(self, site: Site | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.site = site or Site.open()
        self.dir = self.site.local_dir
        self._progress = progress or (lambda message: None)
        self._thread_lock = threading.RLock()
        self._lock_file = None
        self._lock_depth = 0

    # -- where things are ----------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.dir / "cloud.json"

    @property
    def accounts_path(self) -> Path:
        return self.dir / "accounts.json"

    @property
    def cert_paths(self) -> certs.CertPaths:
        return certs.CertPaths(self.dir / "certs")

    @property
    def ca_bundle(self) -> Path:
        """The CA certificate that clients of the local cloud trust (``connection_verify``)."""
        return self.cert_paths.ca_cert

    @property
    def azurite_data(self) -> Path:
        """Azurite's ``--location``; it also identifies our Azurite process."""
        return self.dir / "azurite"

    @property
    def azurite_marker(self) -> tuple[str, ...]:
        """The arguments that only our Azurite process carries."""
        return ("--location", str(self.azurite_data))

    @property
    def azurite_log(self) -> Path:
        return self.dir / "azurite.log"

    @property
    def management(self):
        """The management endpoint service (:class:`~.management.service.ManagementService`)."""
        from provisioner.localcloud.management.service import ManagementService

        return ManagementService(self.site.home, self.dir, self.ca_bundle)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Start what is not running yet (a no-op when all is running); return :meth:`status`."""
        with self._locked():
            state = self._read_state()
            if self._azurite_pid(state) is None:
                self._start_azurite(state)
            record = state["services"].setdefault("management", {})
            if self.management.pid(record) is None:
                self.management.start(record, lambda: self._write_state(state), self._progress)
            return self.status()

    def stop(self) -> list[int]:
        """Stop the processes this site started and wait for them; return their pids."""
        stopped = []
        with self._locked():
            state = self._read_state()
            if state["services"].get("management"):  # first: it stops its front ends
                stopped += self.management.stop(state["services"]["management"], self._progress)
                self._write_state(state)
            pid = self._azurite_pid(state)
            # Ours by pid, plus any Azurite on our folder whose record was lost.
            strays = [p for p in processes.find(self.azurite_marker) if p != pid]
            for each in ([pid] if pid is not None else []) + strays:
                self._progress(f"stopping Azurite (pid {each})")
                processes.stop(each)
                stopped.append(each)
            record = state["services"].get("azurite")
            if record and record.get("pid") is not None:
                record["pid"] = None  # the port stays: it is reused on the next start
                self._write_state(state)
        return stopped

    def status(self) -> dict[str, Any]:
        """Whether the local cloud runs, its endpoints, the CA bundle and the accounts with keys."""
        with self._locked():
            state = self._read_state()
            accounts = self.accounts()
        record = state["services"].get("azurite", {})
        pid = self._azurite_pid(state)
        running = pid is not None
        port = record.get("port")
        management = self.management.status(state["services"].get("management", {}))

        def endpoint(account: str) -> str | None:
            return azurite.blob_endpoint(port, account) if running else None

        return {
            "running": running,
            "blob_endpoint": endpoint(EMULATOR_ACCOUNT),
            "management_endpoint": management["endpoint"],
            "ca_bundle": str(self.ca_bundle) if self.ca_bundle.exists() else None,
            "accounts": [{"name": name, "key": key, "blob_endpoint": endpoint(name)}
                         for name, key in accounts.items()],
            "services": {
                "azurite": {"running": running, "pid": pid, "port": port,
                            "log": str(self.azurite_log)},
                "management": management,
            },
            "local_dir": str(self.dir),
        }

    # -- storage accounts ----------------------------------------------------------------------

    def accounts(self) -> dict[str, str]:
        """Every storage account of the local cloud: name -> key."""
        with self._locked():
            accounts = azurite.load_accounts(self.accounts_path)
            if not self.accounts_path.exists():
                azurite.save_accounts(self.accounts_path, accounts)
            return accounts

    def account_key(self, name: str) -> str:
        try:
            return self.accounts()[name]
        except KeyError:
            raise UsageError(f"the local cloud has no storage account {name!r}") from None

    def add_account(self, name: str) -> str:
        """Create storage account ``name`` with a random key and return its key.

        An existing account keeps its key. Azurite, if running, restarts on the same port.
        """
        azurite.check_account_name(name)
        with self._locked():
            accounts = self.accounts()
            if name in accounts:
                return accounts[name]
            accounts[name] = azurite.new_account_key()
            azurite.save_accounts(self.accounts_path, accounts)
            self._restart_azurite()
            return accounts[name]

    def remove_account(self, name: str) -> bool:
        """Delete every container of account ``name`` (with its own key), then the account.

        Needs the local cloud running when the account exists. Returns False if it did not exist.
        """
        azurite.check_account_name(name)
        if name == EMULATOR_ACCOUNT:
            raise UsageError(f"{EMULATOR_ACCOUNT} is the emulator's default account; it cannot be removed")
        with self._locked():
            accounts = self.accounts()
            if name not in accounts:
                return False
            self._delete_containers(name)
            del accounts[name]
            azurite.save_accounts(self.accounts_path, accounts)
            self._restart_azurite()
            return True

    def blob_endpoint(self, account: str = EMULATOR_ACCOUNT) -> str:
        """``https://127.0.0.1:PORT/ACCOUNT``; raises CdpError when the local cloud is stopped."""
        self.account_key(account)
        with self._locked():
            state = self._read_state()
            if self._azurite_pid(state) is None:
                raise CdpError(NOT_RUNNING)
            return azurite.blob_endpoint(state["services"]["azurite"]["port"], account)

    def blob_service_client(self, account: str = EMULATOR_ACCOUNT, **kwargs: Any):
        """A ``BlobServiceClient`` for ``account``: HTTPS, shared key, trusting the local CA."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(
            self.blob_endpoint(account),
            credential={"account_name": account, "account_key": self.account_key(account)},
            connection_verify=str(self.ca_bundle),
            **kwargs,
        )

    # -- Azurite -------------------------------------------------------------------------------

    def _azurite_pid(self, state: dict[str, Any]) -> int | None:
        """The pid of our running Azurite, or None (no record, dead, or pid reused by another)."""
        pid = state["services"].get("azurite", {}).get("pid")
        return pid if processes.is_ours(pid, self.azurite_marker) else None

    def _start_azurite(self, state: dict[str, Any]) -> None:
        executable = azurite.ensure_installed(self._progress)
        if not self.cert_paths.server_cert.exists():
            self._progress(f"creating the local CA and server certificate in {self.cert_paths.folder}")
        paths = certs.ensure(self.cert_paths.folder)
        record = state["services"].setdefault("azurite", {})
        port = processes.pick_port(record.get("port"))
        if record.get("port") and port != record["port"]:
            self._progress(f"port {record['port']} is taken; Azurite moves to port {port}")
        self.azurite_data.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Two Azurites on one folder would corrupt it: stop any of ours that lost its record.
        for stray in processes.find(self.azurite_marker):
            self._progress(f"stopping a stray Azurite of this site (pid {stray})")
            processes.stop(stray)
        offset = processes.log_size(self.azurite_log)
        argv = azurite.command(executable, location=self.azurite_data, port=port,
                               cert=paths.server_cert, key=paths.server_key)
        self._progress(f"starting Azurite on https://{azurite.HOST}:{port}")
        env = azurite.environment(self.accounts(), self.dir / "node-compile-cache")
        pid = processes.spawn(argv, env=env,
                              cwd=self.azurite_data, log_path=self.azurite_log)
        record.update(pid=pid, port=port)
        self._write_state(state)  # recorded at once, so that even an interrupted start can be stopped
        try:
            processes.wait_ready(pid, azurite.answer_check(port, paths.ca_cert), what="Azurite",
                                 log_path=self.azurite_log, log_offset=offset,
                                 timeout=azurite.START_TIMEOUT)
        except CdpError:
            record["pid"] = None
            self._write_state(state)
            raise

    def _restart_azurite(self) -> None:
        """Restart a running Azurite (it reads its accounts at start); nothing if it is stopped."""
        state = self._read_state()
        pid = self._azurite_pid(state)
        if pid is None:
            return
        self._progress(f"restarting Azurite (pid {pid}) to load its storage accounts")
        processes.stop(pid)
        state["services"]["azurite"]["pid"] = None
        self._write_state(state)
        self._start_azurite(state)

    def _delete_containers(self, account: str) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        service = self.blob_service_client(account)
        try:
            for container in service.list_containers():
                try:
                    service.delete_container(container.name)
                except ResourceNotFoundError:
                    pass  # deleted meanwhile by someone else: gone either way
        except AzureError as exc:
            raise CdpError(f"could not delete the containers of local storage account "
                           f"{account}: {type(exc).__name__}: {exc.message}") from None

    # -- state file and lock -------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {"services": {}}
        except (ValueError, UnicodeDecodeError):
            raise CdpError(f"the local cloud state file {self.state_path} is damaged "
                           "(not JSON); stop any Azurite by hand and delete it") from None
        if not isinstance(state, dict) or not isinstance(state.get("services"), dict):
            raise CdpError(f"the local cloud state file {self.state_path} is damaged (no services)")
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, self.state_path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the site's local cloud lock (re-entrant within this object)."""
        with self._thread_lock:
            if self._lock_depth == 0:
                self.dir.mkdir(parents=True, exist_ok=True)
                os.chmod(self.dir, 0o700)
                lock_file = open(self.dir / "cloud.lock", "a+b")
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX)
                except BaseException:
                    lock_file.close()
                    raise
                self._lock_file = lock_file
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    self._lock_file.close()
                    self._lock_file = None
