"""Stop/start and egress: the blobs the site and the front end share in container ``cdp-control``.

::

    cdp-control/
        serving.json                    {"serving": true|false, "changed_at": "...Z"}, by the site
        egress/YYYY-MM/<instance>.json  {"bytes": N, "locations": M}, by each front-end instance

The site writes ``serving.json`` (:func:`set_serving`, for ``cdp stop``/``cdp start``); every
front-end instance polls it about once a second (:class:`ServingState`). No ``serving.json``
means serving. Each instance counts the stored bytes of the locations it hands out per calendar
month (UTC) and writes its running total to its own blob every couple of seconds and at
shutdown (:class:`EgressMeter`); the site adds them up (:func:`read_egress`). With a hard cap,
an instance re-reads the other instances' totals every few seconds and refuses locations once
the month's total reaches the cap.

The site side is synchronous (azure.storage.blob); the front-end side is asynchronous
(azure.storage.blob.aio).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

CONTROL_CONTAINER = "cdp-control"
SERVING_BLOB = "serving.json"
EGRESS_PREFIX = "egress/"
POLL_INTERVAL = 1.0
FLUSH_INTERVAL = 2.0
OTHERS_INTERVAL = 5.0

log = logging.getLogger("provisioner.frontend")


def month_of(when: float | None = None) -> str:
    """``YYYY-MM`` of a time (seconds since the epoch; now by default), in UTC."""
    return datetime.fromtimestamp(time.time() if when is None else when, timezone.utc).strftime("%Y-%m")


def egress_blob(month: str, instance: str) -> str:
    return f"{EGRESS_PREFIX}{month}/{instance}.json"


def _instance_of(blob_name: str, month: str) -> str | None:
    prefix = f"{EGRESS_PREFIX}{month}/"
    if blob_name.startswith(prefix) and blob_name.endswith(".json"):
        return blob_name[len(prefix):-len(".json")] or None
    return None


def _timestamp(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_serving(body: bytes) -> bool:
    try:
        serving = json.loads(body).get("serving")
    except (ValueError, AttributeError):
        serving = None
    if not isinstance(serving, bool):
        log.warning("%s/%s is damaged; treating the distribution point as serving", CONTROL_CONTAINER, SERVING_BLOB)
        return True
    return serving


def _parse_egress(body: bytes) -> tuple[int, int]:
    try:
        data = json.loads(body)
        nbytes, locations = data["bytes"], data.get("locations", 0)
    except (ValueError, TypeError, KeyError, AttributeError):
        return 0, 0
    ok = all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (nbytes, locations))
    return (nbytes, locations) if ok else (0, 0)


# -- the site side (synchronous) ---------------------------------------------------------------


def _control_container(client: Any):
    """``client`` is a ContainerClient of ``cdp-control`` or a BlobServiceClient."""
    if hasattr(client, "get_container_client"):
        return client.get_container_client(CONTROL_CONTAINER)
    return client


def set_serving(client: Any, serving: bool, now: float | None = None) -> dict[str, Any]:
    """Tell every front-end instance of the distribution point to serve (or not); returns the record."""
    container = _control_container(client)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    record = {"serving": bool(serving), "changed_at": _timestamp(time.time() if now is None else now)}
    container.upload_blob(SERVING_BLOB, json.dumps(record).encode(), overwrite=True)
    return record


def read_serving(client: Any) -> bool:
    """What the site last asked for (True when it never asked)."""
    try:
        return _parse_serving(_control_container(client).download_blob(SERVING_BLOB).readall())
    except ResourceNotFoundError:
        return True


def read_egress(client: Any, month: str) -> dict[str, int]:
    """The bytes each front-end instance handed out in ``month`` (``YYYY-MM``): {instance: bytes}."""
    return {instance: nbytes for instance, (nbytes, _) in read_egress_records(client, month).items()}


def read_egress_records(client: Any, month: str) -> dict[str, tuple[int, int]]:
    """{instance: (bytes, locations)} for ``month``."""
    container = _control_container(client)
    found: dict[str, tuple[int, int]] = {}
    try:
        for blob in container.list_blobs(name_starts_with=f"{EGRESS_PREFIX}{month}/"):
            instance = _instance_of(blob.name, month)
            if instance:
                try:
                    found[instance] = _parse_egress(container.download_blob(blob.name).readall())
                except ResourceNotFoundError:
                    continue
    except ResourceNotFoundError:
        return {}
    return found


# -- the front-end side (asynchronous) ---------------------------------------------------------


class ServingState:
    """Whether this distribution point serves clients, polled from ``serving.json``."""

    def __init__(self, container: Any):
        self.container = container  # azure.storage.blob.aio.ContainerClient of cdp-control
        self.serving = True

    async def refresh(self) -> None:
        try:
            stream = await self.container.download_blob(SERVING_BLOB)
            serving = _parse_serving(await stream.readall())
        except ResourceNotFoundError:
            serving = True
        if serving != self.serving:
            log.warning("the site asked the front end to %s", "serve again" if serving else "stop serving")
        self.serving = serving

    async def run(self, interval: float = POLL_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except AzureError as exc:
                log.warning("cannot read %s: %s; keeping serving=%s", SERVING_BLOB, type(exc).__name__, self.serving)


@dataclass
class _Month:
    bytes: int = 0  # counted by this process
    locations: int = 0
    base: tuple[int, int] | None = None  # this instance's record when the process first read it
    written: tuple[int, int] = (0, 0)  # the local counts last written
    others: int = 0  # the other instances' bytes, as last read


class EgressMeter:
    """This instance's egress per month, its record in storage, and the hard cap."""

    def __init__(self, container: Any, instance: str, cap: int | None, clock=time.time):
        self.container = container  # azure.storage.blob.aio.ContainerClient of cdp-control
        self.instance = instance
        self.cap = cap
        self.clock = clock
        self.months: dict[str, _Month] = {}
        self._lock = asyncio.Lock()
        self._span = (0.0, 0.0, "")  # the month of the last request: (starts, ends, "YYYY-MM")

    def this_month(self) -> str:
        """``YYYY-MM`` now (UTC), recomputed only when the clock leaves the month last seen."""
        now = self.clock()
        starts, ends, name = self._span
        if not starts <= now < ends:
            day = datetime.fromtimestamp(now, timezone.utc)
            first = datetime(day.year, day.month, 1, tzinfo=timezone.utc)
            after = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=timezone.utc)
            name = first.strftime("%Y-%m")
            self._span = (first.timestamp(), after.timestamp(), name)
        return name

    def _month(self, month: str) -> _Month:
        return self.months.setdefault(month, _Month())

    def add(self, nbytes: int | None) -> None:
        """Count one location handed out for ``nbytes`` stored bytes."""
        entry = self._month(self.this_month())
        entry.bytes += nbytes or 0
        entry.locations += 1

    def total(self, month: str | None = None) -> int:
        entry = self._month(month or self.this_month())
        return entry.others + (entry.base or (0, 0))[0] + entry.bytes

    def refusal(self) -> str | None:
        """Why locations are refused (the cap is reached), or None."""
        if self.cap is None:
            return None
        month = self.this_month()
        if self.total(month) >= self.cap:
            return f"egress cap of {self.cap} bytes for {month} reached"
        return None

    async def read(self, month: str | None = None) -> None:
        """Re-read every instance's record of ``month``; the first read seeds this instance's base."""
        month = month or self.this_month()
        records: dict[str, tuple[int, int]] = {}
        try:
            async for blob in self.container.list_blobs(name_starts_with=f"{EGRESS_PREFIX}{month}/"):
                instance = _instance_of(blob.name, month)
                if instance:
                    try:
                        stream = await self.container.download_blob(blob.name)
                        records[instance] = _parse_egress(await stream.readall())
                    except ResourceNotFoundError:
                        continue
        except ResourceNotFoundError:
            pass
        entry = self._month(month)
        if entry.base is None:
            entry.base = records.get(self.instance, (0, 0))
        entry.others = sum(nbytes for instance, (nbytes, _) in records.items() if instance != self.instance)

    async def flush(self) -> None:
        """Write this instance's totals of every month that changed since the last write."""
        async with self._lock:
            for month, entry in list(self.months.items()):
                counted = (entry.bytes, entry.locations)
                if counted == entry.written:
                    continue
                if entry.base is None:
                    await self.read(month)
                record = {"bytes": entry.base[0] + counted[0], "locations": entry.base[1] + counted[1]}
                await self._upload(egress_blob(month, self.instance), json.dumps(record).encode())
                entry.written = counted

    async def _upload(self, name: str, body: bytes) -> None:
        try:
            await self.container.upload_blob(name, body, overwrite=True)
        except ResourceNotFoundError:  # the container is gone (or was never made): make it
            try:
                await self.container.create_container()
            except ResourceExistsError:
                pass
            await self.container.upload_blob(name, body, overwrite=True)

    async def run(self, flush_interval: float = FLUSH_INTERVAL, others_interval: float = OTHERS_INTERVAL) -> None:
        last_read = self.clock()
        while True:
            await asyncio.sleep(flush_interval)
            try:
                await self.flush()
                if self.cap is not None and self.clock() - last_read >= others_interval:
                    await self.read()
                    last_read = self.clock()
            except AzureError as exc:
                log.warning("cannot write the egress record: %s; will retry", type(exc).__name__)
