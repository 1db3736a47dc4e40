from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.provision.harness import ApiServer
from tests.store_fixtures import StoreTarget


@pytest.fixture
def api(store_target: StoreTarget) -> Iterator[ApiServer]:
    with ApiServer(store_target) as server:
        yield server
