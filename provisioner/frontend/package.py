"""The front end's app package: the run-from-package zip a web app runs, locally and on Azure.

::

    provisioner/...      the modules the front end imports (found by importing it), nothing else
    requirements.txt     its runtime dependencies
    startup.sh           the startup command: the front end over plain HTTP on App Service's port

The bytes are deterministic (sorted names, fixed timestamps and modes), so the same code gives
the same zip and the same hash. ``PYTHONPATH=app.zip python -m provisioner.frontend ...`` runs
it as it is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from provisioner.errors import CdpError

# Module roots of the front end; everything they import from ``provisioner`` comes along.
ROOTS = ("provisioner.frontend.__main__", "provisioner.frontend.app", "provisioner.frontend.control",
         "provisioner.frontend.locations", "provisioner.frontend.settings", "provisioner.tokens",
         "provisioner.content.layout")
REQUIREMENTS = (
    "aiohttp>=3.9,<4",  # the transport of azure.storage.blob.aio and azure.identity.aio
    "azure-core>=1.32,<2",
    "azure-identity>=1.19,<2",
    "azure-storage-blob[aio]>=12.25,<13",
    "cryptography>=44,<51",
    "httptools>=0.6,<1",
    "PyJWT>=2.9,<3",
    "starlette>=0.40,<2",
    "uvicorn>=0.30,<1",
    "uvloop>=0.19,<1; sys_platform != 'win32'",
)
STARTUP = """#!/bin/sh
# App Service (Linux, Python) startup command: App Service terminates TLS and gives the port.
exec python -m provisioner.frontend --http --host 0.0.0.0 --port "${PORT:-8000}"
"""
_EPOCH = (1980, 1, 1, 0, 0, 0)
_FIND_MODULES = """
import importlib, json, sys
for root in sys.argv[1:]:
    importlib.import_module(root)
print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items())
                        if (n == "provisioner" or n.startswith("provisioner.")) and getattr(m, "__file__", None))))
"""


def source_files() -> dict[str, Path]:
    """``{name in the zip: file}`` for every ``provisioner`` module the front end imports."""
    root = Path(__file__).resolve().parents[2]  # the folder holding the provisioner package
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDP_")}
    env["PYTHONPATH"] = str(root)
    proc = subprocess.run([sys.executable, "-c", _FIND_MODULES, *ROOTS], cwd=root, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CdpError(f"cannot import the front end to package it: {last}")
    files = {}
    for name in json.loads(proc.stdout):
        path = Path(name).resolve()
        files[path.relative_to(root).as_posix()] = path
    return files


def build_app_package(out_path: Path | str) -> Path:
    """Write the app package to ``out_path`` (atomically) and return its path."""
    out_path = Path(out_path)
    entries = {name: (path.read_bytes(), 0o644) for name, path in source_files().items()}
    entries["requirements.txt"] = ("\n".join(REQUIREMENTS).encode() + b"\n", 0o644)
    entries["startup.sh"] = (STARTUP.encode(), 0o755)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".app-", suffix=".zip", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            for name in sorted(entries):
                data, mode = entries[name]
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o100000 | mode) << 16
                info.create_system = 3  # Unix, so the modes above count
                archive.writestr(info, data, compresslevel=9)
        os.replace(temp, out_path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return out_path
