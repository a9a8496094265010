"""The site: state database (WAL, schema versions) and key files (0600)."""

import os
import stat

import pytest

from provisioner.errors import CdpError
from provisioner.site import Site
from provisioner.site.state import MIGRATIONS, State


def test_state_is_wal_and_versioned(tmp_path):
    state = State.open(tmp_path / "state.db")
    assert state.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert state.schema_version == len(MIGRATIONS)
    state.close()
    again = State.open(tmp_path / "state.db")  # migrating twice changes nothing
    assert again.schema_version == len(MIGRATIONS)
    assert again.query("SELECT count(*) FROM schema_version")[0][0] == len(MIGRATIONS)


def test_transaction_rolls_back(tmp_path):
    state = State.open(tmp_path / "state.db")
    with pytest.raises(RuntimeError):
        with state.tx() as db:
            db.execute("CREATE TABLE t (x)")
            raise RuntimeError("boom")
    assert not state.query("SELECT name FROM sqlite_master WHERE name = 't'")


def test_keys_are_private_and_stable(tmp_path):
    site = Site.open(tmp_path / "home")
    key = site.master_key()
    assert len(key) == 32 and site.master_key() == key
    path = site.keys_dir / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(site.home.stat().st_mode) == 0o700
    site_id = site.site_id
    assert Site.open(tmp_path / "home").site_id == site_id


def test_readable_key_file_is_refused(tmp_path):
    site = Site.open(tmp_path / "home")
    site.master_key()
    os.chmod(site.keys_dir / "master.key", 0o644)
    with pytest.raises(CdpError, match="readable by others"):
        site.master_key()
