"""``cdp token issue``: write an access bundle (token + package keys + sources) for one client."""

from __future__ import annotations

from pathlib import Path

import click

from provisioner.cli.main import cli
from provisioner.cli.output import command


@cli.group("token")
def token_group():
    """Access tokens and the access bundles that carry them."""


@command(token_group, "issue")
@click.option("--client", "client_id", required=True, help="The client id (matched by boundary groups).")
@click.option("--package", "packages", multiple=True,
              help="A package the bundle covers (repeatable; default: every package the site has).")
@click.option("--ttl", default="24h", show_default=True, help="Token lifetime: 90m, 24h, 7d (1s to 30d).")
@click.option("--prefer-region", default=None, help="Put the sources in this Azure region first.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="The access bundle file to write (mode 0600; it holds secrets).")
def issue_cmd(out, client_id, packages, ttl, prefer_region, out_path):
    """Write an access bundle for one client: its token, the keys of its packages, its sources."""
    from provisioner import access, tokens
    from provisioner.site import Site

    seconds = tokens.parse_ttl(ttl)  # bad input fails before the site is touched
    tokens.check_client_id(client_id)
    bundle = access.build_bundle(Site.open(), client_id, list(packages), seconds, prefer_region, warn=out.warn)
    path = access.write_bundle(bundle, out_path)
    result = dict(access.summary(bundle), out=str(path.resolve()))
    out.result(result, human=lambda: _describe(result))


def _describe(result: dict) -> str:
    lines = [f"wrote access bundle {result['out']} for client {result['client']}",
             f"  packages  {', '.join(result['packages'])}",
             f"  expires   {result['expires_at']}",
             "  sources"]
    for rank, source in enumerate(result["sources"], start=1):
        lines.append(f"    {rank}. {source['distribution_point']}  {source['region']}  {source['service_url']}")
    return "\n".join(lines)
