"""The ``cdp`` entry point: builds the command tree and turns failures into exit codes."""

from __future__ import annotations

import sys
import traceback

import click

from provisioner import __version__
from provisioner.cli.output import DEBUG, _set_debug, stderr_line
from provisioner.errors import CdpError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cdp")
@click.option("--debug", is_flag=True, is_eager=True, expose_value=False, callback=_set_debug,
              help="Show the traceback of a failure.")
def cli():
    """cdp: cloud distribution points on Azure, as code."""


def _register() -> None:
    from provisioner.cli import commands  # noqa: F401  (each module adds its commands)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; the one place where failures become messages and exit codes."""
    _register()
    try:
        rv = cli.main(args=argv, prog_name="cdp", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except CdpError as exc:
        if DEBUG["on"]:
            traceback.print_exc()
        stderr_line(f"error: {exc}")
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        stderr_line("error: aborted")
        code = 1
    except click.UsageError as exc:
        if DEBUG["on"]:
            traceback.print_exc()
        stderr_line(f"error: {exc.format_message()}")
        code = 2
    except click.ClickException as exc:
        stderr_line(f"error: {exc.format_message()}")
        code = exc.exit_code
    except KeyboardInterrupt:
        stderr_line("error: interrupted")
        code = 130
    if argv is None:
        sys.exit(code)
    return code
