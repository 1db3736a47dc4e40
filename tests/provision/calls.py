"""Requests to the API under test, as a client would make them, and what a refusal must be."""

from __future__ import annotations

from typing import Any

import requests

from tests.provision.harness import ALICE, SECRET, ApiServer


def call(api: ApiServer, method: str, path: str, body: Any = None, *, user: str | None = ALICE,
         token: str | None = SECRET, data: bytes | None = None) -> requests.Response:  # fmt: skip
    """``body`` as JSON (or raw ``data``), with the shared secret acting for ``user``."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if data is not None:
        headers["Content-Type"] = "application/json"
    params = {"user_id": user} if user is not None else {}
    return requests.request(method, api.url + path, params=params, headers=headers, timeout=30,
                            json=body, data=data)  # fmt: skip


def refused(resp: requests.Response, status: int, errcode: str | None = None) -> str:
    """The error's text, after checking it is a Matrix-style error with ``status``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"errcode", "error"} and body["error"]
    if errcode is not None:
        assert body["errcode"] == errcode, body
    return str(body["error"])
