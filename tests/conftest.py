"""Fixtures shared by the test files.

- ``cdp_home``: a fresh site folder; ``CDP_HOME`` points at it for the test.
- ``local_cloud``: one started :class:`LocalCloud` (real Azurite over HTTPS) on its own site
  folder for the whole session, stopped at the end. Tests that add storage accounts should
  give them unique names.
- ``run_cdp(*args, home=None, input=None)``: runs the real ``cdp`` CLI in a subprocess
  (``python -m provisioner``) with ``CDP_HOME`` set (the test's ``cdp_home`` unless ``home``
  is given) and returns ``CdpResult(code, stdout, stderr)``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from provisioner.localcloud import LocalCloud
from provisioner.site import Site

CLI_TIMEOUT = 180


@dataclass(frozen=True)
class CdpResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:  # what a failing assert shows
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@pytest.fixture
def cdp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cdp-home"
    monkeypatch.setenv("CDP_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def local_cloud(tmp_path_factory: pytest.TempPathFactory):
    cloud = LocalCloud(Site.open(tmp_path_factory.mktemp("local-cloud") / "cdp-home"))
    try:
        cloud.start()
        yield cloud
    finally:
        cloud.stop()


@pytest.fixture
def run_cdp(cdp_home: Path, tmp_path: Path) -> Callable[..., CdpResult]:
    def run(*args: Any, home: Path | None = None, input: str | None = None) -> CdpResult:
        env = dict(os.environ, CDP_HOME=str(home or cdp_home))
        proc = subprocess.run(
            [sys.executable, "-m", "provisioner", *map(str, args)],
            cwd=tmp_path, env=env, input=input or "", capture_output=True, text=True,
            timeout=CLI_TIMEOUT, check=False,
        )
        return CdpResult(proc.returncode, proc.stdout, proc.stderr)

    return run
