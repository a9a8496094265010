"""``cdp render NAME --out DIR``: the ARM templates and parameter files a provision deploys."""

from __future__ import annotations

from pathlib import Path

import click

from provisioner.cli.main import cli
from provisioner.cli.output import command
from provisioner.errors import UsageError
from provisioner.site import Site


@command(cli, "render")
@click.argument("name")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder to write the templates and parameter files into (created if needed).")
@click.option("--region", help="Azure region (default: region in cdp.toml).")
@click.option("--instances", type=int,
              help="Front-end instances, 1 to 30 (default: cdp.toml, else 2).")
@click.option("--fqdn", help="Custom host name clients use to reach the distribution point.")
def render_cmd(out, name, out_dir, region, instances, fqdn):
    """Write the ARM templates and parameter files a provision of NAME would deploy."""
    from provisioner import templates  # here: every other command starts faster

    # Check what was typed before touching the site or the output folder.
    spec = templates.Spec(name=name, region=region, instances=instances, fqdn=fqdn).checked()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} exists and is not a folder")
    # The same inputs (app settings included) that ``cdp provision`` deploys.
    from provisioner import deploy

    rendered = deploy.render_for(Site.open(), spec.name, spec.region, spec.instances, spec.fqdn)
    paths = rendered.write(out_dir)
    out.result(
        {
            "name": spec.name,
            "out": str(out_dir.resolve()),
            "files": [str(p.resolve()) for p in paths],
            "template_hash": rendered.template_hash,
            "resource_group": rendered.names.resource_group,
            "storage_account": rendered.names.storage_account,
            "site": rendered.names.site,
        },
        human=lambda: "\n".join(
            [f"wrote {p}" for p in paths] + [f"template hash {rendered.template_hash}"]
        ),
    )
