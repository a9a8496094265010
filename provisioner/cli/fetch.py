"""``cdp locate`` and ``cdp fetch``: what a client does with its access bundle."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import click

from provisioner.cli.main import cli
from provisioner.cli.output import command


def _access_options(fn):
    fn = click.option("--version", "version", default=None,
                      help="The version to get (default: the source's current version).")(fn)
    fn = click.option("--package", "package", required=True, help="The package id.")(fn)
    fn = click.option("--access", "access", required=True, type=click.Path(path_type=Path),
                      help="The access bundle (from `cdp token issue`).")(fn)
    return fn


@command(cli, "locate")
@_access_options
def locate_cmd(out, access, package, version):
    """Ask the bundle's sources, in order, where PACKAGE is; print the first location.

    --json prints the front end's whole answer with the SAS replaced by "<redacted>": a SAS
    is a credential, and cdp never prints one."""
    from provisioner.access import load_bundle
    from provisioner.client import sources

    location = sources.locate(load_bundle(access), package, version, report=out.info)
    result = location.to_json()
    out.result(result, human=lambda: (
        f"{result['package']} {result['version']} on {result['distribution_point']}\n"
        f"  container  {result['container_url']}\n"
        f"  expires    {result['expires_at']}"))


@command(cli, "fetch")
@_access_options
@click.option("--dest", "dest", required=True, type=click.Path(path_type=Path),
              help="The folder to put the package's files in (created if needed).")
def fetch_cmd(out, access, package, version, dest):
    """Download, verify and decrypt PACKAGE into DEST, from the first source that serves it.

    Only what DEST lacks is downloaded (an older version's files and an interrupted run's
    chunks are reused once they check out); files appear in DEST once all are verified."""
    from provisioner.access import load_bundle
    from provisioner.client.fetch import fetch

    bundle = load_bundle(access)
    with _progress_bar(f"{package}") as advance:
        result = fetch(bundle, package, dest, version, report=out.info, progress=advance)
    data = result.to_json()
    out.result(data, human=lambda: (
        f"{data['package']} {data['version']} from {data['source']}"
        f" into {data['dest']}: {data['files']} files, {data['bytes_total']:,} bytes;"
        f" downloaded {data['bytes_downloaded']:,} bytes in {data['seconds']:.1f} s"))


@contextmanager
def _progress_bar(label: str):
    """A rich progress bar on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, total=total, advance=done)

        yield advance
