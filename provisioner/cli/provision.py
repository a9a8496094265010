"""Distribution point lifecycle: provision, status, scale, redeploy, teardown."""

from __future__ import annotations

import click

from provisioner.cli.main import cli
from provisioner.cli.output import command


def _site():
    from provisioner.site import Site

    return Site.open()


@command(cli, "provision")
@click.argument("name")
@click.option("--target", type=click.Choice(["local", "azure"]), default=None,
              help="Where the distribution point lives (default: cdp.toml's target, else local).")
@click.option("--region", default=None, help="Azure region (default: cdp.toml's region).")
@click.option("--instances", type=int, default=None, help="Front-end instances (default 2).")
@click.option("--fqdn", default=None, help="Custom host name clients use (needs a CNAME).")
@click.option("--what-if", is_flag=True, help="Show the planned changes and deploy nothing.")
def provision_cmd(out, name, target, region, instances, fqdn, what_if):
    """Create or update the distribution point NAME."""
    from provisioner import deploy
    from provisioner.names import check_name

    check_name(name)
    result = deploy.provision(_site(), name, target, region, instances, fqdn, what_if, progress=out.info)
    out.result(result, human=lambda: _describe_provision(result))


def _describe_provision(result: dict) -> str:
    name = result["distribution_point"]
    if not result["changes"]:
        return f"{name}: no changes"
    lines = [f"{name}: {'planned changes' if result['what_if'] else 'changes applied'}:"]
    for change in result["changes"]:
        what = change.get("type") or f"parameter {change['parameter']}"
        detail = change.get("name") or f"{change.get('from')!r} -> {change.get('to')!r}"
        reason = f" ({change['reason']})" if change.get("reason") else ""
        lines.append(f"  {change['action']:7} {what} {detail}{reason}")
    record = result.get("record")
    if record and not result["what_if"]:
        lines.append(f"  service {record['service_url']}  storage {record['storage_account']}")
    return "\n".join(lines)


@command(cli, "status")
@click.argument("name", required=False)
def status_cmd(out, name):
    """Show distribution points, their state and whether their deployment is stale."""
    from provisioner import deploy

    result = deploy.status(_site(), name)
    out.result(result, human=lambda: _describe_status(result))


def _describe_status(result: dict) -> str:
    rows = result["distribution_points"]
    if not rows:
        return "no distribution points (create one with `cdp provision NAME`)"
    lines = []
    for dp in rows:
        flags = [flag for flag, on in (("STALE", dp["stale"]), ("stopped", dp["stopped"])) if on]
        lines.append(f"{dp['name']}: {dp['state']} on {dp['target']} ({dp['region']}), "
                     f"{dp['instances']} instances, storage {dp['storage_account']} "
                     f"({dp['storage_sku']}) {' '.join(flags)}".rstrip())
        if dp["service_url"]:
            lines.append(f"  service {dp['service_url']}")
        usage = dp["storage"]
        alert = f"  ALERT {usage['alert']}" if usage["alert"] else ""
        lines.append(f"  storage {usage['stored_bytes']:,} bytes stored, {usage['percent']}% of the "
                     f"{usage['threshold_bytes'] / 1000**3:,g} GB alert threshold{alert}")
        egress = dp.get("egress")
        if egress and "error" in egress:
            lines.append(f"  egress unknown: {egress['error']}")
        elif egress:
            alert = f"  ALERT {egress['alert']}" if egress["alert"] else ""
            cap = f", hard cap {egress['hard_cap_bytes']:,} bytes" if "hard_cap_bytes" in egress else ""
            lines.append(f"  egress {egress['bytes']:,} bytes in {egress['month']}, {egress['percent']}% of "
                         f"the {egress['threshold_bytes'] / 1000**3:,g} GB monthly threshold{cap}{alert}")
        if dp["error"]:
            lines.append(f"  error: {dp['error']}")
    return "\n".join(lines)


@command(cli, "scale")
@click.argument("name")
@click.option("--instances", type=int, required=True, help="Front-end instances to run.")
def scale_cmd(out, name, instances):
    """Set the front-end instance count of NAME; redeploys keep it."""
    from provisioner import deploy

    result = deploy.scale(_site(), name, instances, progress=out.info)
    out.result(result, human=f"{name}: {result['instances']} instances")


@command(cli, "redeploy")
@click.argument("name")
def redeploy_cmd(out, name):
    """Deploy NAME again with the current templates and toolkit, keeping its instance count."""
    from provisioner import deploy

    result = deploy.redeploy(_site(), name, progress=out.info)
    out.result(result, human=f"{name}: redeployed, {result['instances']} instances, "
                             f"template {result['template_hash']}")


@command(cli, "teardown")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def teardown_cmd(out, name, yes):
    """Delete NAME: its resource group, storage with all content, and front end."""
    from provisioner import deploy

    site = _site()
    planned = deploy.teardown_plan(site, name)
    out.info(f"teardown of {name} ({planned['target']}) will delete:")
    for item in planned["delete"]:
        out.info(f"  {item['type']} {item['name']}")
    if not yes:
        click.confirm("delete these and all content stored in them?", abort=True, err=True)
    result = deploy.teardown(site, name, progress=out.info)
    out.result(result, human=f"{name}: deleted")


@command(cli, "stop")
@click.argument("name")
def stop_cmd(out, name):
    """Stop serving clients from NAME (its front end answers 503); content stays."""
    from provisioner import serving

    result = serving.set_serving(_site(), name, False, info=out.info)
    out.result(result, human=f"{name}: stopped (clients fall back to their next source)")


@command(cli, "start")
@click.argument("name")
def start_cmd(out, name):
    """Serve clients from NAME again."""
    from provisioner import serving

    result = serving.set_serving(_site(), name, True, info=out.info)
    out.result(result, human=f"{name}: serving")
