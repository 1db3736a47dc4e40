"""The emulator's parts, wired once per app and found by handlers through the request."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .auth import IdentityPlatform
from .config import EmulatorConfig
from .faults import WireControl
from .notifier import Notifier
from .odata import origin
from .state import EmulatorState
from .teamwork import Teamwork


@dataclass(slots=True)
class Services:
    config: EmulatorConfig
    state: EmulatorState
    identity: IdentityPlatform
    teamwork: Teamwork
    notifier: Notifier
    wire: WireControl

    @classmethod
    def build(cls, config: EmulatorConfig) -> Services:
        state = EmulatorState()
        notifier = Notifier(state, config)
        teamwork = Teamwork(state)
        teamwork.listeners.append(notifier.on_change)
        return cls(
            config,
            state,
            IdentityPlatform(state, config),
            teamwork,
            notifier,
            WireControl(state, config.request_log_size),
        )

    def graph_base(self, request: web.Request) -> str:
        return origin(request, self.config.public_url) + "/v1.0"

    def reset(self) -> None:
        self.state.reset()
        self.notifier.reset()
        self.wire.reset()


SERVICES = web.AppKey("pontis_graph_emulator", Services)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
