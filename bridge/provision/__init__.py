"""The provisioning API (``/_pontis/provision/v1``): what the management room offers, over
HTTP for integration managers and agency portals. See :mod:`bridge.provision.api`."""

from bridge.provision.api import PREFIX, build_app, install

__all__ = ["PREFIX", "build_app", "install"]
