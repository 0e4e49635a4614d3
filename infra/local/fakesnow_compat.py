"""Serve the fakesnow Snowflake emulator in a shape the `snowflake-api` crate accepts.

fakesnow 0.12 speaks the REST protocol of the Python connector, which tolerates
missing fields; `snowflake-api` deserialises strictly and fails on a login reply
without `masterToken`, `sessionId`, the two validities and `sessionInfo.roleName`,
on a query reply without `returned`, `finalRoleName` and `version`, and on an
error without `age`, `internalError`, `queryId` and a string `sqlState`. This
ASGI wrapper adds exactly those fields and changes nothing else, so the
emulator's own behaviour (SQL, transactions, errors) is what the tests see.

Usage: python fakesnow_compat.py --host 127.0.0.1 --port PORT
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from typing import Any

import uvicorn
from fakesnow.server import app as fakesnow_app

LOGIN_PATH = "/session/v1/login-request"
QUERY_PATH = "/queries/v1/query-request"
ROLE = "SYSADMIN"
_session_ids = itertools.count(1)


def patch_login(reply: dict[str, Any]) -> dict[str, Any]:
    data = reply.get("data")
    if reply.get("success") and isinstance(data, dict):
        data.setdefault("masterToken", "compat-master-" + str(data.get("token", "")))
        data.setdefault("sessionId", next(_session_ids))
        data.setdefault("validityInSeconds", 3600)
        data.setdefault("masterValidityInSeconds", 14400)
        info = data.setdefault("sessionInfo", {})
        info.setdefault("roleName", ROLE)
        info.setdefault("warehouseName", None)
    return reply


def patch_query(reply: dict[str, Any]) -> dict[str, Any]:
    data = reply.get("data")
    if reply.get("success") and isinstance(data, dict):
        data.setdefault("returned", data.get("total", 0))
        data.setdefault("finalRoleName", ROLE)
        data.setdefault("version", 1)
        data.setdefault("parameters", [])
        return reply
    # Errors: fakesnow sends `data: null` for its own failures (HTTP 500/401).
    if not isinstance(data, dict):
        data = {"errorCode": reply.get("code") or "000000"}
        reply["data"] = data
    data.setdefault("errorCode", reply.get("code") or "000000")
    data.setdefault("age", 0)
    data.setdefault("internalError", False)
    data.setdefault("queryId", "")
    data["sqlState"] = str(data.get("sqlState") or "00000")
    reply.setdefault("message", "")
    return reply


PATCHES = {LOGIN_PATH: patch_login, QUERY_PATH: patch_query}


class CompatMiddleware:
    """Buffers the JSON reply of the two patched routes and rewrites it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        patch = PATCHES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if patch is None:
            await self.app(scope, receive, send)
            return

        start: dict[str, Any] = {}
        body_parts: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body_parts.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(body_parts)
            try:
                body = json.dumps(patch(json.loads(body))).encode()
            except (ValueError, TypeError):
                pass  # not JSON: pass it through untouched
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


app = CompatMiddleware(fakesnow_app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.getLogger("fakesnow").setLevel(logging.WARNING)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
