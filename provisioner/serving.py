"""Stop and start serving clients (``cdp stop`` / ``cdp start``): content stays, distribution works.

The site writes the distribution point's control blob; every front-end instance polls it about
once a second. ``stop`` and ``start`` return once the front end confirms (``GET /v1/state``),
and at least one poll interval later, so that every instance has seen it.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Callable

from provisioner import arm, storage
from provisioner.errors import CdpError
from provisioner.frontend import control
from provisioner.site import Site, records

CONFIRM_TIMEOUT = 15.0


def set_serving(site: Site, name: str, serving: bool, info: Callable[[str], None] = lambda m: None) -> dict:
    record = records.require(site.state, name)
    if record.state != records.SUCCEEDED:
        raise CdpError(f"{name} is not deployed (state {record.state}); provision it first")
    conn = arm.connect(site, record.target)
    control.set_serving(storage.blob_service(site, record, conn), serving)
    record.stopped = not serving
    records.save(site.state, record)
    info(f"{name}: {'starting' if serving else 'stopping'}; waiting for the front end to confirm")
    confirmed = _wait_for_front_end(record.service_url, serving, conn.ca_bundle)
    return {"distribution_point": name, "serving": serving, "confirmed": confirmed}


def _wait_for_front_end(service_url: str, serving: bool, ca_bundle: str | None) -> bool:
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
    started = time.monotonic()
    deadline = started + CONFIRM_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{service_url}/v1/state", context=context, timeout=5) as reply:
                if json.load(reply).get("serving") is serving:
                    # every instance polls on its own: give the others one interval too
                    time.sleep(max(0.0, control.POLL_INTERVAL - (time.monotonic() - started)))
                    return True
        except (OSError, ValueError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    return False
