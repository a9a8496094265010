"""How every command talks: results on stdout (JSON with --json), messages on stderr."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable

import click

DEBUG = {"on": False}


def _set_debug(ctx, param, value):
    if value:
        DEBUG["on"] = True
    return value


@dataclass
class Output:
    """Passed to every command as ``out``."""

    json: bool = False

    def result(self, data: Any, human: str | Callable[[], str] | None = None) -> None:
        """Print the command's result: ``data`` as JSON with --json, else ``human``."""
        if self.json:
            click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
            return
        text = human() if callable(human) else human
        if text:
            click.echo(text)

    def info(self, message: str) -> None:
        """A progress or status message, always on stderr."""
        click.echo(message, err=True)

    def warn(self, message: str) -> None:
        click.echo(f"warning: {message}", err=True)


def command(group: click.Group, name: str | None = None, **kwargs):
    """Declare a cdp command: adds --json and --debug and passes ``out`` first."""

    def decorate(fn):
        @functools.wraps(fn)
        def run(*args, json_output: bool, debug: bool, **params):
            return fn(Output(json=json_output), *args, **params)

        run = click.option("--debug", is_flag=True, expose_value=True, is_eager=True,
                           callback=_set_debug, help="Show the traceback of a failure.")(run)
        run = click.option("--json", "json_output", is_flag=True,
                           help="Print the result as JSON on stdout.")(run)
        return group.command(name, **kwargs)(run)

    return decorate


def stderr_line(message: str) -> None:
    sys.stderr.write(message.rstrip("\n").replace("\n", " ") + "\n")
    sys.stderr.flush()
