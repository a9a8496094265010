"""The site state database: SQLite in WAL mode, versioned by ordered migrations."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

# Each entry upgrades the schema by one version. Append; never edit a shipped entry.
MIGRATIONS: list[str] = [
    # 1: distribution points and their deployment records
    """
    CREATE TABLE distribution_points (
        name TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        region TEXT NOT NULL,
        resource_group TEXT NOT NULL,
        storage_account TEXT NOT NULL,
        site_name TEXT NOT NULL,
        instances INTEGER NOT NULL,
        fqdn TEXT,
        state TEXT NOT NULL,
        error TEXT,
        service_url TEXT,
        blob_endpoint TEXT,
        toolkit_version TEXT,
        template_hash TEXT,
        parameters TEXT,
        stopped INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now'))
    );
    """,
    # 2: package keys (wrapped by the site master key) and the site chunk index (what each
    # container holds, as last listed or uploaded; storage wins when they disagree)
    """
    CREATE TABLE package_keys (
        package_id TEXT PRIMARY KEY,
        content_key_wrapped BLOB NOT NULL,
        id_key_wrapped BLOB NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now'))
    );
    CREATE TABLE chunk_index (
        location TEXT NOT NULL,
        chunk_id TEXT NOT NULL,
        stored_bytes INTEGER NOT NULL,
        PRIMARY KEY (location, chunk_id)
    ) WITHOUT ROWID;
    """,
    # 3: package versions the site distributed (their source, for repairs) and where they went
    """
    CREATE TABLE package_versions (
        package_id TEXT NOT NULL,
        version TEXT NOT NULL,
        content_type TEXT NOT NULL,
        source TEXT NOT NULL,
        bytes_total INTEGER NOT NULL,
        chunks_total INTEGER NOT NULL,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
        PRIMARY KEY (package_id, version)
    );
    CREATE TABLE placements (
        package_id TEXT NOT NULL,
        version TEXT NOT NULL,
        distribution_point TEXT NOT NULL,
        status TEXT NOT NULL,
        error TEXT,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')),
        PRIMARY KEY (package_id, version, distribution_point)
    );
    """,
]


class State:
    """A thin handle on the database; callers use :meth:`tx` for writes."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path) -> "State":
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        state = cls(conn, path)
        state.migrate()
        return state

    @property
    def schema_version(self) -> int:
        row = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return row[0] or 0

    def migrate(self) -> None:
        with self.tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY,"
                " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')))"
            )
            current = db.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO schema_version(version) VALUES (?)", (version,))

    @contextmanager
    def tx(self):
        """A write transaction (BEGIN IMMEDIATE): all or nothing."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    def query(self, sql: str, params=()) -> list[sqlite3.Row]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self.conn.close()
