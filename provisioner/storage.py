"""Data-plane access to a distribution point's storage account, for the site.

The account key comes through the management plane (``listKeys`` via :mod:`provisioner.arm`),
on Azure and on the local cloud alike; the local cloud's storage is trusted through its CA.
"""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.storage.blob import BlobServiceClient

from provisioner import arm
from provisioner.content.store import client_options
from provisioner.errors import CdpError
from provisioner.site import Site
from provisioner.site.records import DistributionPointRecord


def account_key(conn: arm.Connection, record: DistributionPointRecord) -> str:
    try:
        keys = conn.storage.storage_accounts.list_keys(record.resource_group, record.storage_account)
    except (HttpResponseError, ServiceRequestError) as exc:
        raise CdpError(f"cannot read the key of storage account {record.storage_account}: "
                       f"{getattr(exc, 'message', None) or exc}".splitlines()[0]) from None
    # azure-mgmt-storage 25 models are mappings: ``keys`` is Mapping.keys, the list is keys_property.
    found = keys.keys_property or []
    if not found or not found[0].value:
        raise CdpError(f"storage account {record.storage_account} returned no key")
    return found[0].value


def blob_service(site: Site, record: DistributionPointRecord,
                 conn: arm.Connection | None = None) -> BlobServiceClient:
    """A client for ``record``'s storage account, with cdp's retry policy."""
    if not record.blob_endpoint:
        raise CdpError(f"no storage endpoint yet (deployment state {record.state})")
    conn = conn or arm.connect(site, record.target)
    options = client_options()
    if conn.ca_bundle:
        options["connection_verify"] = conn.ca_bundle
    credential = {"account_name": record.storage_account, "account_key": account_key(conn, record)}
    return BlobServiceClient(record.blob_endpoint, credential=credential, **options)
