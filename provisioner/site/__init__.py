"""The site: the administrator's side. ``CDP_HOME`` holds cdp.toml, the state database and keys."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from provisioner import config as config_mod
from provisioner.site import keys
from provisioner.site.state import State


def home_from_env() -> Path:
    return Path(os.environ.get("CDP_HOME", "./.cdp")).expanduser().resolve()


@dataclass
class Site:
    home: Path

    @classmethod
    def open(cls, home: Path | None = None) -> "Site":
        site = cls(Path(home).resolve() if home else home_from_env())
        site.home.mkdir(parents=True, exist_ok=True)
        os.chmod(site.home, 0o700)
        return site

    @property
    def config_path(self) -> Path:
        return self.home / "cdp.toml"

    @cached_property
    def config(self) -> config_mod.Config:
        return config_mod.load(self.config_path)

    @cached_property
    def state(self) -> State:
        return State.open(self.home / "state.db")

    @cached_property
    def site_id(self) -> str:
        """A random id of this site, created once; it keeps derived Azure names unique."""
        path = self.home / "site.id"
        try:
            keys.write_private(path, secrets.token_hex(8).encode())
        except FileExistsError:
            pass
        return path.read_text().strip()

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    def master_key(self) -> bytes:
        """The site master key (32 bytes) that wraps every package key; created on first use."""
        return keys.secret_file(self.keys_dir / "master.key", 32)

    @property
    def local_dir(self) -> Path:
        """Where the local cloud keeps its processes' state, certificates and data."""
        return self.home / "local"
