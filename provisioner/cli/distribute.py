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


class NamesOption(click.Option):
    """A repeatable option that also takes the names after it: ``--to a b`` is ``--to a --to b``.

    The names run up to the next token that starts with ``-`` (another option, or ``--``).
    """

    def __init__(self, *args, **kwargs):
        kwargs["multiple"] = True
        super().__init__(*args, **kwargs)

    def add_to_parser(self, parser, ctx) -> None:
        super().add_to_parser(parser, ctx)
        options = {**getattr(parser, "_long_opt", {}), **getattr(parser, "_short_opt", {})}
        for name in self.opts:
            option = options.get(name)
            if option is None or getattr(option, "action", None) != "append":
                continue  # another click parser: the option stays repeatable only
            original = option.process

            def process(value, state, _original=original, _dest=option.dest):
                _original(value, state)
                while state.rargs and not state.rargs[0].startswith("-"):
                    state.opts[_dest].append(state.rargs.pop(0))

            option.process = process


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


def _report_failures(out, results: list[dict], what: str = "") -> None:
    """One line on stderr per failed distribution point."""
    for r in results:
        if r.get("status") == "failed" or r.get("error"):
            out.info(f"error: {r['distribution_point']}: {what}{r['error']}")


@command(cli, "distribute")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--package", "package", required=True, help="Package id.")
@click.option("--version", "version", required=True, help="Version of the package.")
@click.option("--type", "content_type", default="application", show_default=True,
              help="application | package | os-upgrade | third-party-update")
@click.option("--to", "to", cls=NamesOption, metavar="NAME...",
              help="Distribution points: --to a b, or --to a --to b.")
@click.option("--group", default=None, help="A distribution point group from cdp.toml.")
@click.option("--force", is_flag=True, help="Distribute Microsoft software updates anyway.")
def distribute_cmd(out, path, package, version, content_type, to, group, force):
    """Encrypt PATH (a file or folder) and upload it as VERSION of PACKAGE."""
    from provisioner import distribution

    request = distribution.Request(path, package, version, content_type, tuple(to), group, force)
    site = _site()
    planned = distribution.plan(site, request)  # every check; nothing touched yet
    with _progress_bar(planned.tree.size, f"{package} {version}") as advance:
        result = distribution.run(site, planned, info=out.info, progress=advance)
    out.result(result, human=lambda: _describe(result))
    _report_failures(out, result["results"])
    return 0 if all(r["status"] == "uploaded" for r in result["results"]) else 1


def _describe(result: dict) -> str:
    lines = []
    for r in result["results"]:
        if r["status"] == "uploaded":
            lines.append(f"{r['distribution_point']}: {result['package']} {result['version']} stored; "
                         f"uploaded {r['chunks_uploaded']}/{r['chunks_total']} chunks, "
                         f"{r['bytes_uploaded']:,} of {r['bytes_total']:,} bytes in {r['seconds']:.1f} s")
        else:
            lines.append(f"{r['distribution_point']}: FAILED")
    return "\n".join(lines)


@cli.group("content")
def content():
    """Content on distribution points: list, validate, redistribute, remove."""


def _on(fn):
    return click.option("--on", "on", cls=NamesOption, metavar="NAME...",
                        help="Only these distribution points (default: every one).")(fn)


def _scope(fn):
    fn = _on(fn)
    fn = click.option("--version", "version", default=None, help="One version (default: all).")(fn)
    return fn


@command(content, "list")
@click.option("--package", "package", default=None, help="Only this package.")
@_scope
def list_cmd(out, package, version, on):
    """Packages, versions and stored sizes per distribution point."""
    from provisioner import maintenance

    result = maintenance.list_content(_site(), package, on, version)

    def human():
        lines = []
        for r in result["content"]:
            if r.get("error"):
                continue
            versions = ", ".join(f"{v} ({b:,} bytes)" if b is not None else v
                                 for v, b in r["version_bytes"].items()) or "-"
            lines.append(f"{r['distribution_point']}: {r['package']} versions {versions}; "
                         f"current {r['current']}; {r['stored_bytes']:,} bytes stored in {r['chunks']} chunks")
        return "\n".join(lines) or "no content"

    out.result(result, human=human)
    _report_failures(out, result["content"])
    return 0 if result["ok"] else 1


@command(content, "validate")
@click.option("--package", "package", required=True)
@_scope
def validate_cmd(out, package, version, on):
    """Check that every stored chunk decrypts and matches its id; exit 1 if any does not."""
    from provisioner import maintenance

    result = maintenance.validate(_site(), package, version, on, info=out.info)

    def describe(r):
        where = f"{r['distribution_point']}: {package} {r['version'] or '(all versions)'}"
        if r["ok"]:
            return f"{where}: {r['chunks']} chunks OK"
        if r.get("error"):
            return f"{where}: {r['error']}"
        return (f"{where}: {len(r['missing'])} missing, {len(r['corrupt'])} corrupt "
                f"of {r['chunks']} chunks")

    out.result(result, human=lambda: "\n".join(map(describe, result["reports"]))
               or f"{package}: not on any distribution point")
    for r in result["reports"]:
        if not r["ok"]:
            out.info(f"error: {describe(r)}")
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
    _report_failures(out, result["repaired"], f"{package}: ")
    return 0 if result["ok"] else 1


@command(content, "remove")
@click.option("--package", "package", required=True)
@_scope
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove_cmd(out, package, version, on, yes):
    """Delete a version (or the whole package) and collect chunks no remaining version uses."""
    from provisioner import maintenance

    site = _site()
    planned = maintenance.plan_removal(site, package, version, on)  # checks; deletes nothing
    what = f"{package} {version}" if version else f"all versions of {package}"
    out.info(f"will delete {what} from {', '.join(planned)}")
    if not yes:
        click.confirm("delete it?", abort=True, err=True)
    result = maintenance.remove(site, package, version, planned, info=out.info)
    out.result(result, human=lambda: "\n".join(
        f"{r['distribution_point']}: removed {package} {r['version'] or '(all versions)'}"
        + (f", {r['chunks_deleted']} chunks ({r['bytes_freed']:,} bytes) collected"
           if r.get("chunks_deleted") is not None else "")
        + (f"; current is now {r['current']}" if r.get("current") else "")
        for r in result["removed"] if not r.get("error")))
    _report_failures(out, result["removed"])
    return 0 if result["ok"] else 1
