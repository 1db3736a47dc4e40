"""The ``connectors.teams`` section: defaults and types (validated by the core)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from bridge.teams.cloud_config import credential_problems
from bridge.teams.service_config import problems as service_chat_problems

EXAMPLE_CONFIG = """\
enabled: false
# One entry per Microsoft Entra ID (Azure AD) tenant, each with its own app registration
# (see docs/teams.md for the permissions it needs and the admin consent it must have).
tenants: []
#   - tenant_id: 00000000-0000-0000-0000-000000000000   # Directory (tenant) ID
#     client_id: 00000000-0000-0000-0000-000000000000   # Application (client) ID
#     client_secret: ""                                   # the secret's Value, not its ID
#     # Or, instead of the secret, a certificate uploaded to the app registration: a PEM file
#     # with its private key and the certificate, or a .pfx/.p12 (password if it has one).
#     certificate_file: ""
#     certificate_password: ""
#     # The Microsoft cloud of the tenant: global, usgov (GCC High), usgovdod (DoD) or china
#     # (21Vianet). It sets the sign-in authority and the Graph the tokens are for. Default:
#     # global, with graph_url and authority below. authority_host and graph_endpoint, both
#     # given, override it (e.g. https://login.microsoftonline.us and
#     # https://graph.microsoft.us/v1.0).
#     cloud: global
#     # The agency's name as Matrix users see it after each Teams person's name: "Adele
#     # Vance (Contoso)". Default: "Teams". One line, at most 40 characters.
#     display_name: Contoso
#     # Optional relay account: a licensed Teams user that posts for Matrix users who have not
#     # logged in, under "External · via Matrix · @alice:example.org · “Alice”". Without
#     # it, those users are asked to `login teams`. It signs in once with a device code (MFA
#     # as the tenant requires): send `login teams` to the bridge bot and sign in as this
#     # account. Its sign-in is kept sealed with the pickle key.
#     relay_username: pontis.relay@contoso.onmicrosoft.com
# Microsoft Graph of tenants in the global cloud (tenants with a cloud use that cloud's).
graph_url: https://graph.microsoft.com/v1.0
# The identity platform of tenants in the global cloud; MSAL accepts only https.
authority: https://login.microsoftonline.com
# A CA bundle (PEM) to trust for the identity platform instead of the system's, e.g. behind
# a TLS-inspecting proxy. Empty: the system's.
ca_file: ""
# Graph change notifications (webhooks).
webhook:
    # Public HTTPS base URL through which Microsoft reaches this bridge's HTTP port; Graph
    # POSTs to <public_url>/_pontis/teams/notifications. E.g. https://bridge.example.org
    public_url: ""
    # Minutes a subscription lives before the bridge renews it (Graph allows at most 4320).
    subscription_minutes: 4320
# After a restart or a gap in notifications, each bridged chat's messages written since the
# last one on Matrix are bridged, at most this many; older ones are skipped with a notice.
catch_up_messages: 200
# Files up to this size (MB) cross both ways: from Teams chats as Matrix files (larger ones,
# and ones the app may not read without Files.Read.All, as a notice with their link), and
# from Matrix into the sender's OneDrive, shared with the chat (larger ones are refused).
max_file_mb: 25
# Teams users reach Matrix users from Teams alone: they open a chat with a tenant's relay
# account and write a Matrix ID (@anna:example.org); the bridge opens a Teams group chat
# with them and the relay account, bridged to a Matrix direct chat with that user. The
# federation policy (bridge.federation) decides who may reach whom; see docs/teams.md.
service_chat:
    enabled: false
    # Requests one Teams user may make in any hour; beyond it they are told to wait.
    requests_per_hour: 10
    # Whom a Teams user is told to ask when the policy refuses (one line), e.g.
    # "the IT service desk (it-help@contoso.example)".
    contact: the administrators of this Matrix hub
"""

DEFAULT_DISPLAY_NAME = "Teams"

DELEGATED_SCOPES = [
    "Chat.ReadWrite",
    "ChatMessage.Send",
    "User.Read",
    "Files.ReadWrite",
    # Team channels (bridge.teams.channels): post there, and prove membership when bridging one.
    "ChannelMessage.Send",
    "Channel.ReadBasic.All",
    # Files in team channels (bridge.teams.channel_files): the team's library is not the
    # user's own OneDrive, so writing there takes the ".All" scope.
    "Files.ReadWrite.All",
    # Edit and delete one's own channel messages from Matrix (bridge.teams.channel_outbound):
    # Graph takes no narrower delegated permission for PATCH and softDelete in channels.
    "ChannelMessage.ReadWrite",
]
"""What a Matrix user's own login (device code) and the relay account ask for."""


@dataclass(frozen=True, slots=True)
class TenantConfig:
    tenant_id: str
    client_id: str
    client_secret: str
    relay_username: str
    relay_password: str
    display_name: str = DEFAULT_DISPLAY_NAME
    """The agency's name, shown after its people's names on their Matrix ghosts."""
    certificate_file: str = ""
    certificate_password: str = ""
    cloud: str = ""
    authority_host: str = ""
    graph_endpoint: str = ""
    """Where the tenant signs in and which Graph it uses: see :mod:`bridge.teams.tokens`."""

    @property
    def has_relay(self) -> bool:
        """A relay account is configured (signed in by device code, or legacy password)."""
        return bool(self.relay_username)


@dataclass(frozen=True, slots=True)
class TeamsConfig:
    tenants: list[TenantConfig]
    graph_url: str
    authority: str
    public_url: str
    subscription_minutes: int
    catch_up_messages: int
    ca_file: str = ""
    max_file_mb: int = 25
    """Files larger than this cross neither way (a notice says so)."""

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> TeamsConfig:
        tenants = [
            TenantConfig(
                tenant_id=str(t.get("tenant_id", "")).strip().lower(),
                client_id=str(t.get("client_id", "")).strip(),
                client_secret=str(t.get("client_secret", "")),
                relay_username=str(t.get("relay_username", "") or "").strip(),
                relay_password=str(t.get("relay_password", "") or ""),
                display_name=" ".join(str(t.get("display_name") or "").split())
                or DEFAULT_DISPLAY_NAME,
                certificate_file=str(t.get("certificate_file") or "").strip(),
                certificate_password=str(t.get("certificate_password") or ""),
                cloud=str(t.get("cloud") or "").strip().lower(),
                authority_host=str(t.get("authority_host") or "").strip().rstrip("/"),
                graph_endpoint=str(t.get("graph_endpoint") or "").strip().rstrip("/"),
            )
            for t in section.get("tenants") or []
            if isinstance(t, dict)
        ]
        webhook = section.get("webhook") or {}
        return cls(
            tenants=tenants,
            graph_url=str(section.get("graph_url", "https://graph.microsoft.com/v1.0")).rstrip("/"),
            authority=str(section.get("authority", "https://login.microsoftonline.com")).rstrip(
                "/"
            ),
            public_url=str(webhook.get("public_url", "")).rstrip("/"),
            subscription_minutes=int(webhook.get("subscription_minutes", 4320)),
            catch_up_messages=int(section.get("catch_up_messages", 200)),
            ca_file=str(section.get("ca_file") or "").strip(),
            max_file_mb=int(section.get("max_file_mb", 25)),
        )

    @property
    def notification_url(self) -> str:
        return f"{self.public_url}/_pontis/teams/notifications"

    @property
    def lifecycle_url(self) -> str:
        return f"{self.public_url}/_pontis/teams/lifecycle"

    @property
    def allowed_hosts(self) -> list[str]:
        """The hosts that get a token: Graph's only, never the identity platform or others."""
        return [urlparse(self.graph_url).hostname or ""]

    def tenant(self, tenant_id: str) -> TenantConfig | None:
        return next((t for t in self.tenants if t.tenant_id == tenant_id.lower()), None)

    def problems(self, section: dict[str, Any]) -> list[str]:
        """What is wrong with the values, one line per problem, each naming its key."""
        problems = []
        raw = section.get("tenants") or []
        if not raw:
            problems.append("connectors.teams.tenants: add at least one tenant")
        for index, entry in enumerate(raw):
            where = f"connectors.teams.tenants[{index}]"
            if not isinstance(entry, dict):
                problems.append(f"{where}: expected a mapping with tenant_id, client_id, …")
                continue
            for key in ("tenant_id", "client_id"):
                if not str(entry.get(key) or "").strip():
                    problems.append(f"{where}.{key}: required")
            problems += credential_problems(where, entry)
            tenant_id = str(entry.get("tenant_id") or "")
            if tenant_id and not _is_guid(tenant_id):
                problems.append(f"{where}.tenant_id: expected the directory id (a GUID)")
            name = entry.get("display_name")
            if name is not None and (
                not isinstance(name, str) or len(name) > 40 or not name.isprintable()
            ):
                problems.append(
                    f"{where}.display_name: the agency's name on one line, at most 40 characters"
                )
            if entry.get("relay_password") and not entry.get("relay_username"):
                problems.append(f"{where}.relay_password: without relay_username")
        for key, url in (("graph_url", self.graph_url), ("authority", self.authority)):
            if urlparse(url).scheme not in ("http", "https") or not urlparse(url).hostname:
                problems.append(f"connectors.teams.{key}: expected an http(s) URL")
        if urlparse(self.public_url).scheme not in ("http", "https"):
            problems.append(
                "connectors.teams.webhook.public_url: the https URL through which Graph reaches"
                " the bridge, e.g. https://bridge.example.org"
            )
        if not 1 <= self.subscription_minutes <= 4320:
            problems.append("connectors.teams.webhook.subscription_minutes: between 1 and 4320")
        if not 1 <= self.catch_up_messages <= 10_000:
            problems.append("connectors.teams.catch_up_messages: between 1 and 10000")
        if not 0 <= self.max_file_mb <= 1024:
            problems.append("connectors.teams.max_file_mb: between 0 and 1024")
        if urlparse(self.authority).scheme != "https":
            problems.append(
                "connectors.teams.authority: must be https (MSAL refuses anything else)"
            )
        if self.ca_file and not os.path.isfile(self.ca_file):
            problems.append(f"connectors.teams.ca_file: no file {self.ca_file}")
        return problems + service_chat_problems(section)


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
