"""Imports every command module so that each registers its commands on the root group."""

from provisioner.cli import demo, distribute, fetch, local, provision, render, token  # noqa: F401
