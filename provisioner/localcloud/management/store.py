"""The persistent state of the local management endpoint: one JSON file, replaced atomically.

``site.local_dir / "management" / "state.json"`` (owner-only: deployment parameters and app
settings may be secret) holds every table. Keys of the tables are lower-cased ids, since ARM
compares ids case-insensitively; the records keep the case they were created with::

    subscriptions     id -> {"subscriptionId", "firstSeen"}
    resource_groups   /subscriptions/s/resourcegroups/rg -> ARM resource group JSON
    resources         resource id -> {"resource": ARM JSON, "declared": body, "local": {...}}
    deployments       deployment id -> {"deployment": ARM JSON, "operation": op id}
    operations        op id -> {"status", "error", "kind", "target"}
"""

from __future__ import annotations

import copy
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from provisioner.errors import CdpError
from provisioner.site.keys import write_private

TABLES = ("subscriptions", "resource_groups", "resources", "deployments", "operations")


class Store:
    """The tables in memory, written to disk at the end of every ``transaction()``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "state.json"
        self._lock = threading.RLock()
        self._depth = 0
        self.data = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        except (ValueError, UnicodeDecodeError):
            raise CdpError(f"the local management state {self.path} is damaged (not JSON); "
                           "move it away to start with an empty local cloud") from None
        if not isinstance(data, dict):
            raise CdpError(f"the local management state {self.path} is damaged (not an object)")
        for table in TABLES:
            data.setdefault(table, {})
        return data

    @contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Hold the lock; on leaving the outermost one, save. Yields the tables."""
        with self._lock:
            self._depth += 1
            try:
                yield self.data
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._save()

    def read(self, table: str, key: str) -> dict[str, Any] | None:
        """A copy of one record, or None."""
        with self._lock:
            record = self.data[table].get(key.lower())
            return copy.deepcopy(record) if record is not None else None

    def values(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(list(self.data[table].values()))

    def _save(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        write_private(tmp, json.dumps(self.data, indent=1, sort_keys=True).encode())
        os.replace(tmp, self.path)
