"""The local management endpoint as a process: an ASGI app (Starlette) served by uvicorn over
HTTPS with the local cloud's server certificate.

``python -m provisioner.localcloud.management --home CDP_HOME --port PORT`` runs it; the
local cloud (:class:`provisioner.localcloud.LocalCloud`) starts it beside Azurite through
:mod:`.service`, which recognises it by its ``--home`` argument. On start it starts the recorded front ends again;
on SIGTERM (uvicorn's graceful shutdown) it stops them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provisioner.localcloud.management import urls
from provisioner.localcloud.management.models import ArmError, ManagementBackend
from provisioner.localcloud.management.responses import ArmRequest, ArmResponses

HOST = "127.0.0.1"  # loopback only, as the rest of the local cloud
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"]
SHUTDOWN_GRACE = 2
log = logging.getLogger("cdp.management")


def create_app(backend: ManagementBackend) -> Starlette:
    handlers = ArmResponses(backend)

    async def dispatch(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            response = await _handle(handlers, request)
        except ArmError as error:
            response = _json(error.status, error.body())
        except Exception:  # a bug: answer as ARM does, keep serving, keep the traceback
            log.exception("%s %s failed", request.method, request.url.path)
            response = _json(500, {"error": {"code": "InternalServerError",
                                             "message": "the local management endpoint failed; see its log"}})
        response.headers["x-ms-request-id"] = request_id
        response.headers["x-ms-correlation-request-id"] = request.headers.get(
            "x-ms-correlation-request-id", request_id)
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(backend.start)
        try:
            yield
        finally:
            await run_in_threadpool(backend.stop)

    return Starlette(routes=[Route("/{path:path}", dispatch, methods=METHODS)], lifespan=lifespan)


async def _handle(handlers: ArmResponses, request: Request) -> Response:
    authorization = request.headers.get("authorization", "")
    if not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
        raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' "
                       "header is missing or is not a bearer token.")
    path = request.url.path
    found = urls.match(path)
    if found is None:
        raise ArmError(404, "NotFound", f"The local management endpoint has no route for '{path}'.")
    handler, methods, params = found
    if request.method not in methods:
        raise ArmError(405, "MethodNotAllowed", f"{request.method} is not supported for '{path}'.")
    if "api-version" not in request.query_params:
        raise ArmError(400, "MissingApiVersionParameter",
                       "The api-version query parameter (?api-version=) is required for all requests.")
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise ArmError(400, "InvalidRequestContent", "The request content is not valid JSON.") from None
    arm_request = ArmRequest(method=request.method, path=path,
                             base_url=f"{request.url.scheme}://{request.url.netloc}", params=params,
                             query=dict(request.query_params), body=body)
    handlers.backend.record_subscription(params["subscription"])
    result = await run_in_threadpool(getattr(handlers, handler), arm_request)
    if result.body is None or result.status == 204 or request.method == "HEAD":
        return Response(status_code=result.status, headers=result.headers)
    return _json(result.status, result.body, result.headers)


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, headers=headers,
                    media_type="application/json; charset=utf-8")


def _expected_grace_timeout(record: logging.LogRecord) -> bool:
    """Drop uvicorn's error line for the grace timeout that idle SDK connections always cause."""
    return "timeout graceful shutdown exceeded" not in record.getMessage()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from provisioner.localcloud import LocalCloud, certs
    from provisioner.localcloud.management.provider import LocalProvider
    from provisioner.site import Site

    parser = argparse.ArgumentParser(prog="python -m provisioner.localcloud.management",
                                     description="The local Azure Resource Manager endpoint.")
    parser.add_argument("--home", type=Path, required=True, help="the site (CDP_HOME)")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    logging.getLogger("uvicorn.error").addFilter(_expected_grace_timeout)
    site = Site.open(args.home)
    cloud = LocalCloud(site)
    paths = certs.ensure(cloud.cert_paths.folder)
    backend = ManagementBackend(site.local_dir / "management", lambda b: LocalProvider(b, cloud))
    # An idle keep-alive TLS connection of an SDK client holds a graceful shutdown until the
    # peer's close_notify (30 s); after SHUTDOWN_GRACE uvicorn moves on to the lifespan
    # shutdown, which stops the front ends.
    uvicorn.run(create_app(backend), host=args.host, port=args.port, ssl_certfile=str(paths.server_cert),
                ssl_keyfile=str(paths.server_key), timeout_graceful_shutdown=SHUTDOWN_GRACE,
                log_level=os.environ.get("CDP_MANAGEMENT_LOG_LEVEL", "warning"), access_log=False)
