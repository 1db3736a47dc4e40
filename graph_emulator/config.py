"""Knobs of the emulator: what a test shortens (retry delays, intervals) or a demo changes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class EmulatorConfig:
    # Base URL clients use, if not the address they connected to (e.g. behind a proxy).
    public_url: str | None = None
    access_token_lifetime: int = 3599
    refresh_token_lifetime: int = 90 * 24 * 3600
    device_code_lifetime: int = 900
    # Seconds a device-code client is told to wait between polls.
    device_code_interval: int = 5
    # Graph waits up to 10 s for the validation echo; tests need not change this.
    validation_timeout: float = 10.0
    # Graph expects a notification to be acknowledged within 3 s.
    delivery_timeout: float = 3.0
    # Pauses before each redelivery; Graph retries for up to 4 h, the emulator for this long.
    retry_delays: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
    # Graph insists on https notification URLs; the emulator allows http so loopback works.
    allow_http_notification_urls: bool = True
    # How often expired subscriptions, tokens and device codes are swept away.
    sweep_interval: float = 1.0
    # Requests kept for /_emulator/requests (oldest dropped first).
    request_log_size: int = 2000
    max_page_size: int = 50
    default_page_size: int = 20
    # Members of a channel per page (a shared channel may hold 5,000 people).
    members_page_size: int = 100
    extra: dict[str, str] = field(default_factory=dict)
