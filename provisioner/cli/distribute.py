"""`cdp distribute` and `cdp content list | validate | redistribute | remove`."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import click

from provisioner.cli.main import cli
from provisioner.cli.output import command


def _site():
    from provisioner.site import Site

    return Site.open()


@contextmanager
def _progress_bar(total: int, label: str):
    """A rich progress bar on stderr when it is a terminal; otherwise nothing."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@command(cli, "distribute")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--package", "package", required=True, help="Package id.")
@click.option("--version", "version", required=True, help="Version of the package.")
@click.option("--type", "content_type", default="application", show_default=True,
              help="application | package | os-upgrade | third-party-update")
@click.option("--to", "to", multiple=True, help="A distribution point (repeatable).")
@click.option("--group", default=None, help="A distribution point group from cdp.toml.")
@click.option("--force", is_flag=True, help="Distribute Microsoft software updates anyway.")
def distribute_cmd(out, path, package, version, content_type, to, group, force):
    """Encrypt PATH (a file or folder) and upload it as VERSION of PACKAGE."""
    from provisioner import distribution
    from provisioner.content import manifest

    request = distribution.Request(path, package, version, content_type, tuple(to), group, force)
    site = _site()
    size = manifest.scan(path).size if path.exists() else 0
    with _progress_bar(size, f"{package} {version}") as advance:
        result = distribution.distribute(site, request, info=out.info, progress=advance)
    out.result(result, human=lambda: _describe(result))
    return 0 if all(r["status"] == "uploaded" for r in result["results"]) else 1


def _describe(result: dict) -> str:
    lines = []
    for r in result["results"]:
        if r["status"] == "uploaded":
            lines.append(f"{r['distribution_point']}: {result['package']} {result['version']} stored; "
                         f"uploaded {r['chunks_uploaded']}/{r['chunks_total']} chunks, "
                         f"{r['bytes_uploaded']:,} of {r['bytes_total']:,} bytes in {r['seconds']:.1f} s")
        else:
            lines.append(f"{r['distribution_point']}: FAILED: {r['error']}")
    return "\n".join(lines)


@cli.group("content")
def content():
    """Content on distribution points: list, validate, redistribute, remove."""


def _scope(fn):
    fn = click.option("--on", "on", multiple=True, help="Only these distribution points.")(fn)
    fn = click.option("--version", "version", default=None, help="One version (default: all).")(fn)
    return fn


@command(content, "list")
@click.option("--package", "package", default=None, help="Only this package.")
@click.option("--on", "on", multiple=True, help="Only these distribution points.")
def list_cmd(out, package, on):
    """Packages, versions and stored sizes per distribution point."""
    from provisioner import maintenance

    result = maintenance.list_content(_site(), package, on)
    out.result(result, human=lambda: "\n".join(
        f"{r['distribution_point']}: {r['package']} versions {', '.join(r['versions']) or '-'} "
        f"(current {r['current']}), {r['stored_bytes']:,} bytes in {r['chunks']} chunks"
        for r in result["content"]) or "no content")


@command(content, "validate")
@click.option("--package", "package", required=True)
@_scope
def validate_cmd(out, package, version, on):
    """Check that every stored chunk decrypts and matches its id; exit 1 if any does not."""
    from provisioner import maintenance

    result = maintenance.validate(_site(), package, version, on, info=out.info)

    def human():
        lines = []
        for r in result["reports"]:
            if r["ok"]:
                lines.append(f"{r['distribution_point']}: {package} {r['version']}: {r['chunks']} chunks OK")
            elif "error" in r:
                lines.append(f"{r['distribution_point']}: {package} {r['version']}: {r['error']}")
            else:
                lines.append(f"{r['distribution_point']}: {package} {r['version']}: "
                             f"{len(r['missing'])} missing, {len(r['corrupt'])} corrupt chunks")
        return "\n".join(lines) or f"{package}: not on any distribution point"

    out.result(result, human=human)
    return 0 if result["ok"] else 1


@command(content, "redistribute")
@click.option("--package", "package", required=True)
@_scope
def redistribute_cmd(out, package, version, on):
    """Repair missing or corrupt content from the site's source."""
    from provisioner import maintenance

    result = maintenance.redistribute(_site(), package, version, on, info=out.info)
    out.result(result, human=lambda: "\n".join(
        f"{r['distribution_point']}: {package} {r['version']}: {r['status']}, "
        f"{r['chunks_uploaded']} chunks re-uploaded" for r in result["repaired"]) or "nothing to repair")
    return 0 if result["ok"] else 1


@command(content, "remove")
@click.option("--package", "package", required=True)
@_scope
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove_cmd(out, package, version, on, yes):
    """Delete a version (or the whole package) and collect unused chunks."""
    from provisioner import maintenance

    if not yes:
        what = f"{package} {version}" if version else f"all versions of {package}"
        click.confirm(f"delete {what} from the distribution points?", abort=True, err=True)
    result = maintenance.remove(_site(), package, version, on, info=out.info)
    out.result(result, human=lambda: "\n".join(
        f"{r['distribution_point']}: removed {package} {r['version'] or '(all versions)'}"
        for r in result["removed"]))
