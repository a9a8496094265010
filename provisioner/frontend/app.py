"""The front end of a distribution point: checks a client's token, answers with a location.

Routes::

    GET /health                               200 {"status": "ok"}, always (App Service probes it)
    GET /v1/state                             200 {"serving": bool}; no auth, nothing secret
    GET /v1/locations/{package}[/{version}][?have=V]   Authorization: Bearer <token>;
                                              V: the version the client holds (egress then
                                              counts only the chunks it lacks)

A location request is answered, in this order: 503 ``stopped`` when the site stopped this
distribution point; 401 for a missing, malformed, tampered or expired token (or one from
another site); 403 when the token does not cover this distribution point or the package; 503
with the reason when the month's egress reached the hard cap; 404 for an unknown package or
version; 503 when storage does not answer; else 200 with the location
(:meth:`provisioner.frontend.locations.Location.to_json`). Errors are ``{"error": "..."}``
and never hold a token, key or SAS.

Nothing here logs a request line (uvicorn's access log is off), and every log line goes
through :class:`RedactingFormatter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any, AsyncIterator

from azure.core.exceptions import AzureError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from provisioner.frontend.control import CONTROL_CONTAINER, EgressMeter, ServingState
from provisioner.frontend.locations import Locator, NotFound, SasSigner, StorageUnavailable
from provisioner.frontend.settings import Settings
from provisioner.redaction import redact
from provisioner.tokens import TokenForbidden, TokenInvalid, Verifier

log = logging.getLogger("provisioner.frontend")
START_TIMEOUT = 10.0


class FrontEnd:
    """Everything one front-end process holds: settings, token verifier, storage, state."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.verifier = Verifier(settings.token_public_key, issuer=settings.site_id)
        self.service: Any = None
        self.locator: Locator | None = None
        self.serving: ServingState | None = None
        self.egress: EgressMeter | None = None
        self._credential: Any = None
        self._session: Any = None

    # -- lifecycle -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._open_storage()
        control = self.service.get_container_client(CONTROL_CONTAINER)
        self.serving = ServingState(control)
        self.egress = EgressMeter(control, self.settings.instance_id, self.settings.egress_hard_cap)
        self.locator = Locator(self.settings, self.service, SasSigner(self.settings, self.service))
        await self._first_read()
        tasks = [asyncio.create_task(self.serving.run()), asyncio.create_task(self.egress.run())]
        gc.freeze()  # what start-up made lives as long as the process: keep it out of GC passes
        log.info("front end of distribution point %s started (instance %s)",
                 self.settings.distribution_point, self.settings.instance_id)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._last_flush()
            await self.service.close()
            await self._session.close()
            if self._credential is not None:
                await self._credential.close()

    def _open_storage(self) -> None:
        """The async storage client, on one aiohttp session with one TLS context.

        azure-core's aiohttp transport builds a new SSL context for every request when
        ``connection_verify`` names a CA file, and aiohttp then opens a new connection (a TLS
        handshake) for each; a session whose connector holds the context reuses connections.
        """
        import ssl

        import aiohttp
        from azure.core.pipeline.transport import AioHttpTransport
        from azure.storage.blob.aio import BlobServiceClient

        tls = ssl.create_default_context(cafile=self.settings.ca_bundle)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls), trust_env=True,
                                              cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
        transport = AioHttpTransport(session=self._session, session_owner=False)
        if self.settings.uses_account_key:
            credential: Any = {"account_name": self.settings.storage_account,
                               "account_key": self.settings.storage_key}
        else:
            from azure.identity.aio import DefaultAzureCredential

            credential = self._credential = DefaultAzureCredential()
        self.service = BlobServiceClient(self.settings.blob_endpoint, credential=credential, transport=transport,
                                         retry_total=2, connection_timeout=5, read_timeout=10)

    async def _first_read(self) -> None:
        """Learn the serving state and this month's egress before the first request."""
        try:
            await asyncio.wait_for(asyncio.gather(self.serving.refresh(), self.egress.read()), START_TIMEOUT)
        except (AzureError, OSError, TimeoutError) as exc:  # storage may be down; the pollers keep trying
            log.warning("storage did not answer at start (%s); assuming serving", type(exc).__name__)

    async def _last_flush(self) -> None:
        try:
            await asyncio.wait_for(self.egress.flush(), START_TIMEOUT)
        except (AzureError, OSError, TimeoutError) as exc:  # say so; at most the last seconds are lost
            log.warning("could not write the last egress record (%s)", type(exc).__name__)

    # -- routes --------------------------------------------------------------------------------

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def state(self, request: Request) -> JSONResponse:
        return JSONResponse({"serving": self.serving.serving})

    async def location(self, request: Request) -> JSONResponse:
        if not self.serving.serving:
            return _error(503, "stopped")
        package = request.path_params["package"]
        version = request.path_params.get("version")
        try:
            self.verifier.verify(_bearer(request), self.settings.distribution_point, package)
        except TokenInvalid as exc:
            return _error(401, str(exc), {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        except TokenForbidden as exc:
            return _error(403, str(exc))
        refusal = self.egress.refusal()
        if refusal:
            return _error(503, refusal)
        try:
            location = await self.locator.locate(package, version, request.query_params.get("have"))
        except NotFound as exc:
            return _error(404, str(exc))
        except StorageUnavailable as exc:
            log.warning("%s", exc)
            return _error(503, "storage is not answering; try another source")
        self.egress.add(location.bytes)
        return JSONResponse(location.to_json(self.settings.distribution_point),
                            headers={"Cache-Control": "no-store"})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenInvalid("the Authorization header is not 'Bearer <token>'")
    return token.strip()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return _error(exc.status_code, exc.detail or "error", exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return _error(500, "internal error")


def create_app(settings: Settings | None = None) -> Starlette:
    """The ASGI app; settings from the environment unless given (ConfigError if one is bad)."""
    front = FrontEnd(settings or Settings.from_env())
    routes = [
        Route("/health", front.health, methods=["GET"]),
        Route("/v1/state", front.state, methods=["GET"]),
        Route("/v1/locations/{package}", front.location, methods=["GET"]),
        Route("/v1/locations/{package}/{version}", front.location, methods=["GET"]),
    ]
    handlers = {HTTPException: _http_error, Exception: _internal_error}
    app = Starlette(routes=routes, lifespan=front.lifespan, exception_handlers=handlers)
    app.state.front_end = front
    return app


# -- logging -----------------------------------------------------------------------------------


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then removes SAS signatures, bearer tokens and account keys."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """uvicorn's ``log_config``: one redacting handler on stderr, no access log."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"redacting": {"()": RedactingFormatter,
                                     "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "redacting",
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"level": level},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
            "azure": {"level": "WARNING"},
        },
        "root": {"handlers": ["stderr"], "level": level},
    }
