"""The one path to Azure Resource Manager.

Every management call goes through the real Azure SDK clients built here. Target ``azure``
points them at Azure with ``DefaultAzureCredential``; target ``local`` points the *same*
clients at the local management endpoint over HTTPS, trusting the local CA, with a local
credential. Deploy code never calls HTTP directly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cached_property

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.deployments import DeploymentsMgmtClient
from azure.mgmt.storage import StorageManagementClient

from provisioner.errors import CdpError, UsageError
from provisioner.site import Site

LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
ARM_SCOPE = "https://management.azure.com/.default"
CREDENTIALS_HELP = (
    "Azure credentials are missing: sign in with `az login`, or set AZURE_TENANT_ID, "
    "AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for a service principal"
)
SUBSCRIPTION_HELP = (
    "no Azure subscription: set subscription_id in cdp.toml or the AZURE_SUBSCRIPTION_ID "
    "environment variable"
)


class LocalCredential:
    """The local management endpoint accepts any bearer token; this hands out one."""

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken("local-cdp-token", int(time.time()) + 3600)

    def close(self) -> None:
        pass


@dataclass
class Connection:
    """Where a target's management plane is and how to authenticate to it."""

    target: str
    subscription_id: str
    credential: object
    base_url: str | None = None
    ca_bundle: str | None = None

    def _kwargs(self) -> dict:
        kwargs: dict = {"retry_total": 3}
        if self.base_url:
            kwargs.update(base_url=self.base_url, credential_scopes=[ARM_SCOPE],
                          connection_verify=self.ca_bundle, polling_interval=1)
        return kwargs

    @cached_property
    def resources(self) -> ResourceManagementClient:
        return ResourceManagementClient(self.credential, self.subscription_id, **self._kwargs())

    @cached_property
    def deployments(self) -> DeploymentsMgmtClient:
        return DeploymentsMgmtClient(self.credential, self.subscription_id, **self._kwargs())

    @cached_property
    def storage(self) -> StorageManagementClient:
        return StorageManagementClient(self.credential, self.subscription_id, **self._kwargs())


def check_target(target: str) -> str:
    if target not in ("local", "azure"):
        raise UsageError(f"unknown target {target!r}: use local or azure")
    return target


def connect(site: Site, target: str) -> Connection:
    """Build the SDK clients for ``target``; fails early with one clear line."""
    check_target(target)
    if target == "local":
        from provisioner.localcloud import NOT_RUNNING, LocalCloud

        status = LocalCloud(site).status()
        if not status["running"]:
            raise CdpError(NOT_RUNNING)
        endpoint = status.get("management_endpoint")
        if not endpoint:
            raise CdpError("the local management endpoint is not running; run `cdp local start`")
        return Connection("local", site.config.subscription_id or LOCAL_SUBSCRIPTION,
                          LocalCredential(), endpoint, status["ca_bundle"])
    subscription = site.config.subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID")
    if not subscription:
        raise CdpError(SUBSCRIPTION_HELP)
    from azure.identity import CredentialUnavailableError, DefaultAzureCredential

    credential = DefaultAzureCredential(process_timeout=10)
    try:
        credential.get_token(ARM_SCOPE)
    except (CredentialUnavailableError, ClientAuthenticationError):
        raise CdpError(CREDENTIALS_HELP) from None
    return Connection("azure", subscription, credential)
