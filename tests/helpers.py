"""What the CLI-level test modules share: running the real `cdp` in a subprocess against a
site, reading its JSON and error lines, and a started local cloud with provisioned CDPs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager

from provisioner.localcloud import LocalCloud
from provisioner.site import Site


def command(home, *args, env=None) -> tuple[list[str], dict]:
    return ([sys.executable, "-m", "provisioner", *map(str, args)],
            {**os.environ, "CDP_HOME": str(home), **(env or {})})


def cdp(home, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    """Run ``cdp ARGS`` on the site ``home``, with no standard input."""
    argv, environ = command(home, *args, env=env)
    return subprocess.run(argv, env=environ, input="", capture_output=True, text=True,
                          timeout=timeout, check=False)


def start_cdp(home, *args) -> subprocess.Popen:
    argv, environ = command(home, *args)
    return subprocess.Popen(argv, env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def cdp_json(home, *args, code=0):
    proc = cdp(home, *args, "--json")
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout)


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def status_of(home, name) -> dict:
    return cdp_json(home, "status", name)["distribution_points"][0]


@contextmanager
def local_site(tmp_path_factory, label: str, provision=()):
    """A site with a started local cloud and the distribution points ``provision`` deployed."""
    home = tmp_path_factory.mktemp(label) / "cdp-home"
    cloud = LocalCloud(Site.open(home))
    cloud.start()
    try:
        for name in provision:
            done = cdp(home, "provision", name)
            assert done.returncode == 0, done.stderr
        yield home
    finally:
        cloud.stop()
