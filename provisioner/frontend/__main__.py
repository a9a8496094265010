"""``python -m provisioner.frontend --port P --cert C --key K``: serve the front end over HTTPS.

The app settings of the site arrive as environment variables (see
:mod:`provisioner.frontend.settings`); a missing or bad one stops the process at once with one
line on stderr. ``--data-dir`` is the instance's own folder (its working directory); the local
cloud also recognises the process by it. ``--http`` serves plain HTTP instead, for App
Service, whose front door terminates TLS.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvicorn

from provisioner.errors import CdpError
from provisioner.frontend.app import create_app, logging_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m provisioner.frontend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, help="server certificate (PEM)")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")
    parser.add_argument("--http", action="store_true",
                        help="serve plain HTTP behind a TLS-terminating proxy (App Service)")
    parser.add_argument("--data-dir", type=Path, help="the instance's working folder")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    if args.http == bool(args.cert or args.key) or bool(args.cert) != bool(args.key):
        parser.error("give --cert and --key (HTTPS), or --http alone")
    if args.data_dir:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        os.chdir(args.data_dir)
    try:
        app = create_app()
    except CdpError as exc:
        print(f"front end: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    tls = {} if args.http else {"ssl_certfile": str(args.cert), "ssl_keyfile": str(args.key)}
    uvicorn.run(app, host=args.host, port=args.port, log_config=logging_config(args.log_level.upper()),
                access_log=False, server_header=False, proxy_headers=args.http, **tls)


if __name__ == "__main__":
    main()
