"""`cdp demo`: the whole story on the local cloud, start to finish."""

from __future__ import annotations

from provisioner.cli.main import cli
from provisioner.cli.output import command


@command(cli, "demo")
def demo_cmd(out):
    """Run the story on the local cloud and print a short summary."""
    from provisioner import demo

    summary = demo.run(progress=out.info)
    out.result(summary, human=lambda: demo.describe(summary))
