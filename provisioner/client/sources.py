"""Asking content sources for a location, in the bundle's priority order, with fallback.

A client shows its token to a distribution point's front end
(``GET {service_url}/v1/locations/{package}[/{version}]``) and gets back where that version
lives in storage: the container URL and a read-only SAS. When a source does not answer, answers
5xx (503 when it is stopped), or refuses the token (401/403), the client says so on stderr in
one line (``dp1: stopped (503), trying dp2``) and asks the next one. 404 means this source does
not have the package or version; the next source may. The HTTP calls go through azure-core's
pipeline (its retry policy: a couple of quick retries on connection errors, none on a status).

HTTPS is verified against the bundle's CA certificate for sources on the local cloud and the
system's trust store for sources in Azure. The token goes only into the Authorization header;
a :class:`Location`'s SAS never appears in repr(), messages or :meth:`Location.to_json`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from azure.core import PipelineClient
from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline.policies import RetryPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest

from provisioner.access import Bundle, Source
from provisioner.content.layout import check_package_id, check_version
from provisioner.errors import CdpError
from provisioner.redaction import redact

Report = Callable[[str], None]
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 15
REDACTED = "<redacted>"


@dataclass(frozen=True)
class Location:
    """Where one package version lives on one source: what the front end answered."""

    source: Source
    package: str
    version: str
    container_url: str
    sas: str = field(repr=False)
    expires_at: str
    manifest: str
    bytes: int | None

    def to_json(self) -> dict[str, Any]:
        """The answer for scripts, with the SAS replaced by ``"<redacted>"``: the SAS is a
        credential, and secrets never appear in output. ``cdp fetch`` uses it internally."""
        return {
            "distribution_point": self.source.distribution_point,
            "service_url": self.source.service_url,
            "package": self.package,
            "version": self.version,
            "container_url": self.container_url,
            "sas": REDACTED,
            "expires_at": self.expires_at,
            "manifest": self.manifest,
            "bytes": self.bytes,
        }


class Refused(CdpError):
    """One source did not give a location: the HTTP status (None: no answer) and why."""

    def __init__(self, reason: str, status: int | None = None):
        self.reason = reason
        self.status = status
        super().__init__(f"{reason} ({status})" if status else reason)


@dataclass(frozen=True)
class Failure:
    source: Source
    reason: str
    status: int | None = None
    damaged: bool = False  # content from this source failed an integrity check


class Attempts:
    """The sources of a bundle, tried in order; each failure is reported as one line.

    Iterate to get the sources; call :meth:`failed` for one that did not serve, then
    :meth:`error` once none did."""

    def __init__(self, sources: tuple[Source, ...], report: Report):
        self.sources = sources
        self.report = report
        self.failures: list[Failure] = []

    def __iter__(self) -> Iterator[Source]:
        return iter(self.sources)

    def failed(self, source: Source, reason: str, status: int | None = None, damaged: bool = False) -> None:
        self.failures.append(Failure(source, reason, status, damaged))
        names = [s.distribution_point for s in self.sources]
        at = names.index(source.distribution_point)
        line = f"{source.distribution_point}: {reason}" + (f" ({status})" if status else "")
        self.report(line + (f", trying {names[at + 1]}" if at + 1 < len(names) else ""))

    @property
    def damaged(self) -> bool:
        return any(failure.damaged for failure in self.failures)

    def error(self, package: str, version: str | None, bundle: Bundle) -> CdpError:
        what = f"package {package}" + (f" version {version}" if version else "")
        if self.failures and all(f.status == 404 for f in self.failures):
            return CdpError(f"{what} not found on any source")
        if (self.failures and all(f.status == 401 for f in self.failures)
                and datetime.now(UTC) >= bundle.expires_at):
            return CdpError(f"the access bundle expired at {_iso(bundle.expires_at)}: every source refused its"
                            " token; ask the site for a new one (cdp token issue)")
        reasons = "; ".join(f"{f.source.distribution_point}: {f.reason}" + (f" ({f.status})" if f.status else "")
                            for f in self.failures)
        return CdpError(f"no source could serve {what}: {reasons}")


@contextmanager
def trust(bundle: Bundle) -> Iterator[Callable[[Source], bool | str]]:
    """``verify(source)``: what azure-core's ``connection_verify`` is for that source.

    The bundle's CA (a public certificate) is written to a temporary file for the duration:
    requests, under azure-core, takes a CA as a file path."""
    path = None
    try:
        if bundle.ca_bundle:
            fd, path = tempfile.mkstemp(prefix="cdp-ca-", suffix=".pem")
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(bundle.ca_bundle)
        ca = path

        def verify(source: Source) -> bool | str:
            return ca if source.target == "local" and ca else True

        yield verify
    finally:
        if path:
            os.unlink(path)


def ask(source: Source, token: str, package: str, version: str | None, verify: bool | str,
        have: str | None = None) -> Location:
    """One location request to one source; :class:`Refused` with the reason if it gives none.
    ``have``: the version the client holds, so that the source counts only what it lacks."""
    url = source.service_url.rstrip("/") + "/v1/locations/" + quote(package, safe="")
    if version:
        url += "/" + quote(version, safe="")
    if have:
        url += "?have=" + quote(have, safe="")
    request = HttpRequest("GET", url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    client = PipelineClient(source.service_url, policies=[
        RetryPolicy(retry_total=2, retry_connect=2, retry_read=1, retry_status=0, retry_backoff_factor=0.2),
    ], transport=RequestsTransport(connection_verify=verify, connection_timeout=CONNECT_TIMEOUT,
                                   read_timeout=READ_TIMEOUT))
    try:
        with client:
            response = client.send_request(request)
            response.read()
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise Refused(f"unreachable ({_connection_reason(exc)})") from None
    except AzureError as exc:
        raise Refused(f"request failed ({type(exc).__name__})") from None
    body = _json(response)
    if response.status_code != 200:
        message = body.get("error") if isinstance(body, dict) else None
        raise Refused(clean(message) if isinstance(message, str) and message else "refused", response.status_code)
    return _location(source, body, package, version)


def locate(bundle: Bundle, package: str, version: str | None = None,
           report: Report = lambda line: None) -> Location:
    """The location of ``package`` (``version``, else the current one) from the first source
    that serves it; CdpError naming every source's reason if none does."""
    check_package_id(package)
    if version is not None:
        check_version(version)
    bundle.keys_for(package)  # a bundle without the package's keys cannot use the content anyway
    attempts = Attempts(bundle.sources, report)
    with trust(bundle) as verify:
        for source in attempts:
            try:
                return ask(source, bundle.token, package, version, verify(source))
            except Refused as exc:
                attempts.failed(source, exc.reason, exc.status)
    raise attempts.error(package, version, bundle)


def clean(text: str) -> str:
    """One short line from a remote message, with anything shaped like a secret removed."""
    line = " ".join(str(text).split())
    return redact(line)[:200]


def _json(response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _location(source: Source, body: Any, package: str, version: str | None) -> Location:
    try:
        location = Location(
            source=source, package=body["package"], version=body["version"],
            container_url=body["container_url"], sas=body["sas"], expires_at=body["expires_at"],
            manifest=body["manifest"], bytes=body.get("bytes"),
        )
        ok = all(isinstance(v, str) and v for v in (location.package, location.version, location.container_url,
                                                     location.sas, location.manifest))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise Refused("answered with a malformed location")
    if location.package != package or (version and location.version != version):
        raise Refused(f"answered for {location.package} {location.version} instead")
    if urlsplit(location.container_url).scheme != "https":
        raise Refused("answered with a location that is not HTTPS")
    return location


def _connection_reason(exc: AzureError) -> str:
    text = str(exc)
    for needle, reason in (("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not trusted"),
                           ("Connection refused", "connection refused"),
                           ("timed out", "timed out"), ("Name or service not known", "unknown host"),
                           ("Connection reset", "connection reset"), ("Connection aborted", "connection aborted")):
        if needle in text:
            return reason
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return clean(errno.group(1)) if errno else type(exc).__name__


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
