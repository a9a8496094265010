"""``cdp local``: start, stop and inspect the local cloud (Azurite over HTTPS)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from provisioner.cli.main import cli
from provisioner.cli.output import Output, command

if TYPE_CHECKING:
    from provisioner.localcloud import LocalCloud


@cli.group("local")
def local_group():
    """The local cloud: Azurite storage over HTTPS on this machine."""


def _cloud(out: Output) -> LocalCloud:
    # Imported here, not at the top: every other command starts faster without it.
    from provisioner.localcloud import LocalCloud

    return LocalCloud(progress=out.info)


def _describe(status: dict[str, Any]) -> str:
    if not status["running"]:
        return "local cloud: stopped (start it with `cdp local start`)"
    azurite = status["services"]["azurite"]
    names = ", ".join(account["name"] for account in status["accounts"])
    return "\n".join([
        "local cloud: running",
        f"  blob endpoint  {status['blob_endpoint']}  (Azurite pid {azurite['pid']})",
        f"  CA bundle      {status['ca_bundle']}",
        f"  accounts       {names}",
        "  keys           cdp local status --json",
    ])


@command(local_group, "start")
def start_cmd(out: Output):
    """Start the local cloud (a no-op if it runs); install Azurite on first use."""
    status = _cloud(out).start()
    out.result(status, human=lambda: _describe(status))


@command(local_group, "stop")
def stop_cmd(out: Output):
    """Stop the processes of the local cloud; its data stays."""
    stopped = _cloud(out).stop()
    human = (f"local cloud stopped (pid {', '.join(map(str, stopped))})" if stopped
             else "local cloud was not running")
    out.result({"running": False, "stopped": stopped}, human=human)


@command(local_group, "status")
def status_cmd(out: Output):
    """Show whether the local cloud runs, its endpoints, CA bundle and storage accounts."""
    status = _cloud(out).status()
    out.result(status, human=lambda: _describe(status))


@local_group.group("account")
def account_group():
    """Storage accounts of the local cloud (provisioning makes one per distribution point)."""


@command(account_group, "add")
@click.argument("name")
def account_add_cmd(out: Output, name: str):
    """Add storage account NAME with a random key (an existing account keeps its key)."""
    cloud = _cloud(out)
    key = cloud.add_account(name)
    status = cloud.status()
    endpoint = next(a["blob_endpoint"] for a in status["accounts"] if a["name"] == name)
    out.result({"name": name, "key": key, "blob_endpoint": endpoint},
               human=f"storage account {name} ready")


@command(account_group, "remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def account_remove_cmd(out: Output, name: str, yes: bool):
    """Delete every container of storage account NAME, then the account."""
    cloud = _cloud(out)
    if name in cloud.accounts():
        cloud.blob_endpoint(name)  # fails before asking when the local cloud is stopped
    if name in cloud.accounts() and not yes:
        click.confirm(f"delete storage account {name} and all its containers?", abort=True,
                      err=True)
    removed = cloud.remove_account(name)
    out.result({"name": name, "removed": removed},
               human=f"storage account {name} {'removed' if removed else 'did not exist'}")
