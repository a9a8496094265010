"""Reading one package container's blobs with the read-only SAS of a location.

A client only ever GETs blobs (whole, or a range of one) by name from one container, so it
talks to storage through azure-core's pipeline (the same transport, retry policy and exceptions that azure-storage-blob
is built on) rather than the full blob SDK, which costs half a second of imports per ``cdp
fetch`` and several copies of every body. What the SDK would add here is done the same way:

- a response body is read inside the pipeline (:class:`_ReadBody`, below the retry policy), so
  a body cut short is retried like a refused connection, into one buffer of the announced size,
  1 MiB per read (azure-core's default block of 4 KiB costs a lot of Python per MB);
- ``x-ms-version`` is the SAS's own ``sv``, the version the SAS was signed for;
- proxies and a CA bundle from the environment are honoured as requests does, looked up once;
- a failure becomes :class:`BlobUnavailable` with one line that never holds the URL or SAS.
"""

from __future__ import annotations

from typing import Self
from urllib.parse import parse_qs, quote

import requests
from azure.core.exceptions import AzureError, ServiceResponseError
from azure.core.pipeline import Pipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HeadersPolicy, HTTPPolicy, RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest

from provisioner.client.sources import clean
from provisioner.errors import CdpError

READ_BLOCK = 1 << 20
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 30
_BODY = "cdp.body"


class BlobUnavailable(CdpError):
    """A blob could not be read: ``missing`` when storage says it is not there."""

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message)
        self.missing = missing


class Container:
    """The blobs of one container, read with a SAS: ``get(name)`` returns a blob's bytes."""

    def __init__(self, container_url: str, sas: str, verify: bool | str):
        self._base = container_url.rstrip("/") + "/"
        self._sas = sas.lstrip("?")
        version = parse_qs(self._sas).get("sv", [None])[0]
        # What requests would take from the environment on every request (proxies, a CA bundle),
        # taken once: scanning the environment costs ~1 ms of held GIL per request.
        settings = requests.Session().merge_environment_settings(self._base, {}, None, verify, None)
        self._options = {"stream": True, "proxies": settings["proxies"], "connection_verify": settings["verify"]}
        transport = RequestsTransport(use_env_settings=False, connection_timeout=CONNECT_TIMEOUT,
                                      read_timeout=READ_TIMEOUT, connection_data_block_size=READ_BLOCK)
        self._pipeline = Pipeline(transport, policies=[
            HeadersPolicy({"x-ms-version": version} if version else {}),
            RetryPolicy(retry_total=3, retry_connect=3, retry_read=3, retry_status=3,
                        retry_backoff_factor=0.5, retry_backoff_max=4),
            _ReadBody(),
        ])

    def __enter__(self) -> Self:
        self._pipeline.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._pipeline.__exit__(*exc)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytearray:
        """The bytes of blob ``name`` (``length`` bytes from ``offset`` if given: fewer if the
        blob ends first); BlobUnavailable if storage does not give them."""
        headers = {} if length is None else {"x-ms-range": f"bytes={offset}-{offset + length - 1}"}
        request = HttpRequest("GET", f"{self._base}{quote(name)}?{self._sas}", headers=headers)
        try:
            response = self._pipeline.run(request, **self._options)
        except AzureError as exc:
            raise BlobUnavailable(f"its storage failed ({_reason(exc)})") from None
        status = response.http_response.status_code
        if status in (404, 416):  # 416: the blob ends before offset
            raise BlobUnavailable("not in its storage", missing=True)
        if status not in (200, 206):
            code = response.http_response.headers.get("x-ms-error-code") or response.http_response.reason
            raise BlobUnavailable(f"its storage answered HTTP {status} {clean(code or '')}".rstrip())
        return response.context[_BODY]


class _ReadBody(HTTPPolicy):
    """Read a 200 or 206 response's whole body into one buffer, inside the retry policy's reach."""

    def send(self, request: PipelineRequest) -> PipelineResponse:
        response = self.next.send(request)
        http = response.http_response
        request.context.pop(_BODY, None)
        if http.status_code not in (200, 206):
            http.read()  # the small error body, so that the connection goes back to the pool
            return response
        try:
            size = int(http.headers["Content-Length"])
        except (KeyError, ValueError):
            http.close()
            raise ServiceResponseError("a blob came without its Content-Length") from None
        body = bytearray(size)
        view, got = memoryview(body), 0
        for block in http.iter_raw():  # azure-core maps a broken or short body to ServiceResponseError
            end = got + len(block)
            if end > size:
                http.close()
                raise ServiceResponseError("a blob came longer than its Content-Length")
            view[got:end] = block
            got = end
        if got != size:
            raise ServiceResponseError(f"a blob came {got} of {size} bytes long")
        response.context[_BODY] = body
        return response


def _reason(exc: AzureError) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return clean(text)
