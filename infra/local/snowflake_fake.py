"""A protocol-level fake of Snowflake's REST API, in front of the fakesnow emulator.

The emulator (`fakesnow_compat.app`: fakesnow's server plus the fields the Rust
client needs) answers every statement at once and inline, and never ends a
session. Real Snowflake does not, so this ASGI app sits in front of it and adds
the awkward paths of the real protocol, switched on at run time over HTTP:

- Tokens: login returns this fake's OWN session and master tokens; every other
  request has its `Authorization` header rewritten to the emulator's token.
  An unknown or dead session token gets 390112 (the emulator never sees it).
  `POST /session/token-request` (RENEW) is answered here and keeps the same
  emulator session, so temporary tables survive a renewal.
- Chunked results: a SELECT reply (`rowsetBase64`) with more than
  `inline_rows` rows, when `chunk_rows` > 0, keeps its first `inline_rows` rows
  inline and moves the rest into Arrow IPC stream chunks of `chunk_rows` rows,
  served at `GET /fake-chunks/<result id>/<n>` (absolute URLs from the Host
  header), guarded by an SSE-C style key given as `chunkHeaders` or `qrmk`
  (403 with S3-like XML on a missing or wrong key). Bodies are gzip with
  `Content-Encoding: gzip` ("header"), gzip without it ("magic"), or plain
  ("none"). Only the chunks of the last 64 results are kept (older ones: 404
  NoSuchKey). DML replies (JSON `rowset`) and errors pass untouched.
- Latency: every protocol request (not /fake/ routes) waits `latency_ms`.
- Faults (below) and a request log.

With no faults and `--chunk-rows 0` it behaves like the compat app.

Run:
    python infra/local/snowflake_fake.py --host 127.0.0.1 --port PORT \
        [--chunk-rows N] [--inline-rows M] [--latency-ms L] \
        [--gzip header|magic|none] [--keys chunkHeaders|qrmk]
Defaults: chunk-rows 0 (never chunk), inline-rows 1000, latency 0, gzip header,
keys chunkHeaders.

Control API (JSON in, JSON out):
    POST /fake/faults    {"faults": [RULE, ...]} appends rules -> {"ok": true}
    GET  /fake/faults    {"faults": [...]} with remaining skip/times
    POST /fake/reset     clears faults and the log (keeps data and sessions);
                         ?database=NAME: only the rules scoped to NAME
    POST /fake/settings  any of {"latency_ms", "chunk_rows", "inline_rows",
                         "gzip", "keys"} -> {"ok": true, "settings": {...}}
    GET  /fake/settings  {"ok": true, "settings": {...}}
    GET  /fake/log       [?database=NAME: only that database's sessions]
                         {"requests": [{"route", "method", "path", "query",
                         "sql", "body" (PASSWORD masked), "status", "code",
                         "fault", "key_header", "session", "database"}, ...]}; "sql" is
                         the query route's sqlText, "session" the login's
                         sessionId, "fault" the action applied

RULE: {"route": "query"|"login"|"token"|"result"|"chunk"|"abort"
       (also "session", "heartbeat", "other"), "action": ACTION,
       "database": only requests of sessions logged into this database (for
       "chunk": of the session the result was made for; case-insensitive),
       "sql_contains": substring (case-insensitive; for "result" it matches
       the SQL of the async query being polled), "skip": 0, "times": 1 (-1 =
       always), ...action options}. Rules are tried in order; the first one
       that matches and has times left decides: while it still has skips the
       request passes untouched (one skip is used), otherwise it is applied.
ACTION:
    "async" (query): run now, store the reply, answer "code" (333334) with
        getResultUrl; the first "polls" (2; -1 = until aborted) GETs of
        /queries/<id>/result answer 333334 again, then the stored reply. An
        async rule may also carry the chunk options of "chunks".
    "session_expired": the request's session token dies; answer 390112.
    "master_expired": session and master token die; answer 390112, and a
        token-request with that master answers "code" (390114; or 390113,
        390115): the client must log in again (new emulator session).
    "status": answer HTTP "status" (503) with a text body, "when": "before"
        (statement never runs) or "after" (it ran, reply discarded); 429 carries
        Retry-After: "retry_after" (1).
    "hang": wait "seconds" (30), "when": "before" (then handle) or "after"
        (handle, wait, answer). An abort of the query's requestId during the
        wait answers 000604 instead.
    "chunks" (query): per-statement "chunk_rows", "inline_rows", "gzip",
        "keys", "returned_zero": true (every row in chunks, returned 0) and
        "drop_rows": k (last chunk body holds k rows fewer than its rowCount).
    "slow" (chunk): delay the chunk by "ms".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import json
import logging
import re
import secrets
import sys
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakesnow_compat import app as compat_app  # noqa: E402

logger = logging.getLogger("snowflake_fake")

GZIP_MODES = ("header", "magic", "none")
KEY_MODES = ("chunkHeaders", "qrmk")
ROUTES = ("query", "login", "token", "result", "chunk", "abort", "session", "heartbeat", "other")
ACTIONS = ("async", "session_expired", "master_expired", "status", "hang", "chunks", "slow")
MAX_RESULTS = 64
MAX_ASYNC = 256
SSE_KEY = "x-amz-server-side-encryption-customer-key"
SSE_MD5 = "x-amz-server-side-encryption-customer-key-md5"
SSE_ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
IN_PROGRESS_MESSAGE = (
    "Asynchronous execution in progress. Use provided query id to perform query monitoring and management."
)
MASTER_MESSAGES = {
    "390113": "Master token missing or not found. The user must authenticate again.",
    "390114": "Authentication token has expired.  The user must authenticate again.",
    "390115": "Master token is invalid. The user must authenticate again.",
}


# ---------------------------------------------------------------- state


@dataclass
class Settings:
    latency_ms: int = 0
    chunk_rows: int = 0
    inline_rows: int = 1000
    gzip: str = "header"
    keys: str = "chunkHeaders"

    def update(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            if name in ("latency_ms", "chunk_rows", "inline_rows"):
                if not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be an integer >= 0")
            elif (name, value) not in [("gzip", m) for m in GZIP_MODES] + [("keys", m) for m in KEY_MODES]:
                raise ValueError(f"bad setting {name}={value!r}")
        for name, value in values.items():
            setattr(self, name, value)


@dataclass
class Rule:
    route: str
    action: str
    sql_contains: str | None
    database: str | None  # only requests of sessions logged into this database
    skip: int
    times: int
    spec: dict[str, Any]  # the rule as sent: action options live here

    @classmethod
    def parse(cls, raw: Any) -> Rule:
        if not isinstance(raw, dict):
            raise ValueError("a rule must be an object")
        route, action = raw.get("route"), raw.get("action")
        if route not in ROUTES or action not in ACTIONS:
            raise ValueError(f"bad route {route!r} or action {action!r}")
        if action in ("async", "chunks") and route != "query" or action == "slow" and route != "chunk":
            raise ValueError(f"action {action} does not apply to route {route}")
        if raw.get("when", "before") not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        if raw.get("gzip", "header") not in GZIP_MODES or raw.get("keys", "qrmk") not in KEY_MODES:
            raise ValueError(f"gzip must be one of {GZIP_MODES}, keys one of {KEY_MODES}")
        sql, database = raw.get("sql_contains"), raw.get("database")
        return cls(
            route,
            action,
            sql.lower() if sql else None,
            database.upper() if database else None,
            int(raw.get("skip", 0)),
            int(raw.get("times", 1)),
            raw,
        )

    @property
    def when(self) -> str:
        return str(self.spec.get("when", "before"))


@dataclass
class Session:
    id: int
    inner_token: str  # the emulator's session token
    token: str  # our current session token
    master: str
    token_alive: bool = True
    master_alive: bool = True
    master_code: str = "390114"  # what a token-request answers once the master is dead
    database: str | None = None  # the login's databaseName


@dataclass
class AsyncQuery:
    query_id: str
    request_id: str | None
    sql: str
    reply: dict[str, Any]
    polls_left: int
    code: str
    aborted: bool = False


@dataclass
class StoredResult:
    key: str
    gzip: str
    bodies: list[bytes]
    database: str | None = None


@dataclass
class State:
    settings: Settings = field(default_factory=Settings)
    faults: list[Rule] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    by_token: dict[str, Session] = field(default_factory=dict)
    by_master: dict[str, Session] = field(default_factory=dict)
    results: OrderedDict[str, StoredResult] = field(default_factory=OrderedDict)
    queries: OrderedDict[str, AsyncQuery] = field(default_factory=OrderedDict)
    inflight: dict[str, set[asyncio.Event]] = field(default_factory=dict)  # requestId -> abort events
    turns: dict[str, asyncio.Lock] = field(default_factory=dict)  # emulator session -> one statement at a time

    def turn(self, session: Session) -> asyncio.Lock:
        return self.turns.setdefault(session.inner_token, asyncio.Lock())

    def take_rule(self, route: str, sql: str | None, database: str | None) -> Rule | None:
        for rule in self.faults:
            if rule.route != route or rule.times == 0:
                continue
            if rule.database and rule.database != (database or "").upper():
                continue
            if rule.sql_contains and (sql is None or rule.sql_contains not in sql.lower()):
                continue
            if rule.skip > 0:
                rule.skip -= 1
                return None
            if rule.times > 0:
                rule.times -= 1
            return rule
        return None


STATE = State()


# ---------------------------------------------------------------- replies


def json_reply(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj).encode(), status, media_type="application/json")


def sf_error(code: str, message: str, data: dict[str, Any] | None) -> dict[str, Any]:
    return {"success": False, "code": code, "message": message, "data": data}


def session_expired() -> dict[str, Any]:
    data = {"nextAction": "RETRY_LOGIN", "authnMethod": "TOKEN", "errorCode": "390112"}
    return sf_error("390112", "Your session has expired. Please login again.", data)


def master_error(code: str) -> dict[str, Any]:
    return sf_error(code, MASTER_MESSAGES.get(code, MASTER_MESSAGES["390114"]), {"nextAction": "RETRY_LOGIN", "errorCode": code})


def query_error(code: str, message: str, sql_state: str, query_id: str) -> dict[str, Any]:
    data = {"errorCode": code, "sqlState": sql_state, "queryId": query_id, "age": 0, "internalError": False}
    return sf_error(code, message, data)


def canceled(query_id: str) -> dict[str, Any]:
    return query_error("000604", "SQL execution canceled", "57014", query_id)


def in_progress(query_id: str, code: str) -> dict[str, Any]:
    data = {"queryId": query_id, "getResultUrl": f"/queries/{query_id}/result", "queryAbortsAfterSecs": 300, "progressDesc": None}
    return {"data": data, "code": code, "message": IN_PROGRESS_MESSAGE, "success": True}


def s3_error(status: int, code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{secrets.token_hex(8).upper()}</RequestId><HostId>{secrets.token_urlsafe(32)}</HostId></Error>"
    )
    return Response(body, status, media_type="application/xml")


def status_reply(rule: Rule) -> Response:
    status = int(rule.spec.get("status", 503))
    headers = {"Retry-After": str(rule.spec.get("retry_after", 1))} if status == 429 else None
    return Response(f"HTTP {status}: fault injected by snowflake_fake\n", status, headers=headers, media_type="text/plain")


# ---------------------------------------------------------------- the inner app


@dataclass
class Inner:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def response(self) -> Response:
        ctype = next((v.decode() for k, v in self.headers if k.lower() == b"content-type"), None)
        return Response(self.body, self.status, media_type=ctype)


async def call_inner(request: Request, body: bytes, token: str | None) -> Inner:
    """Run one request through the compat app in process; `token` replaces the Authorization token."""
    headers = list(request.scope["headers"])
    if token is not None:
        headers = [(k, v) for k, v in headers if k.lower() != b"authorization"]
        headers.append((b"authorization", f'Snowflake Token="{token}"'.encode()))
    outer = request.scope
    scope = {
        **{k: outer.get(k) for k in ("http_version", "method", "scheme", "path", "raw_path", "query_string", "server", "client")},
        **{"type": "http", "asgi": {"version": "3.0"}, "root_path": "", "headers": headers},
    }
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects from the inner app
        raise AssertionError("unreachable")

    start: dict[str, Any] = {}
    parts: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    try:
        await compat_app(scope, receive, send)
    except Exception:
        if not start:
            raise
        # fakesnow's debug error page re-raises after sending its 500: keep that reply
        logger.exception("the emulator failed on %s %s", request.method, request.url.path)
    return Inner(int(start.get("status", 500)), list(start.get("headers", [])), b"".join(parts))


# ---------------------------------------------------------------- chunking


@dataclass
class ChunkPlan:
    chunk_rows: int
    inline_rows: int
    gzip: str
    keys: str
    returned_zero: bool = False
    drop_rows: int = 0

    @classmethod
    def of(cls, rule: Rule | None) -> ChunkPlan:
        s = STATE.settings
        spec = rule.spec if rule is not None and rule.action in ("chunks", "async") else {}
        return cls(
            int(spec.get("chunk_rows", s.chunk_rows)),
            int(spec.get("inline_rows", s.inline_rows)),
            str(spec.get("gzip", s.gzip)),
            str(spec.get("keys", s.keys)),
            bool(spec.get("returned_zero", False)),
            int(spec.get("drop_rows", 0)),
        )


@dataclass
class Split:
    inline_b64: str
    inline_rows: int
    total: int
    chunks: list[tuple[int, int, bytes]]  # (rowCount, uncompressedSize, body as served)


def ipc_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def split_rowset(rowset_b64: str, plan: ChunkPlan) -> Split | None:
    """Cut an inline Arrow result into an inline part and chunks; None when it stays inline."""
    if plan.chunk_rows <= 0:
        return None
    table = pa.ipc.open_stream(base64.b64decode(rowset_b64)).read_all()
    total = table.num_rows
    inline = 0 if plan.returned_zero else min(plan.inline_rows, total)
    if total <= (0 if plan.returned_zero else plan.inline_rows):
        return None
    inline_b64 = base64.b64encode(ipc_stream(table.slice(0, inline))).decode() if inline else ""
    starts = list(range(inline, total, plan.chunk_rows))
    chunks = []
    for i, start in enumerate(starts):
        rows = min(plan.chunk_rows, total - start)
        kept = max(rows - plan.drop_rows, 0) if i == len(starts) - 1 else rows
        raw = ipc_stream(table.slice(start, kept))
        chunks.append((rows, len(raw), raw if plan.gzip == "none" else gzip.compress(raw, compresslevel=1)))
    return Split(inline_b64, inline, total, chunks)


async def chunk_reply(request: Request, reply: Any, rule: Rule | None, database: str | None = None) -> Any:
    """Rewrite a successful Arrow query reply into inline part + chunks, per the plan."""
    data = reply.get("data") if isinstance(reply, dict) and reply.get("success") else None
    if not isinstance(data, dict) or not data.get("rowsetBase64"):
        return reply
    plan = ChunkPlan.of(rule)
    split = await asyncio.to_thread(split_rowset, data["rowsetBase64"], plan)
    if split is None:
        return reply
    result_id = uuid.uuid4().hex
    raw_key = secrets.token_bytes(32)
    key = base64.b64encode(raw_key).decode()
    STATE.results[result_id] = StoredResult(key, plan.gzip, [body for _, _, body in split.chunks], database)
    while len(STATE.results) > MAX_RESULTS:
        STATE.results.popitem(last=False)
    base = f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"
    data["rowsetBase64"] = split.inline_b64
    data["returned"] = split.inline_rows
    data["total"] = split.total
    data["chunks"] = [
        {"url": f"{base}/fake-chunks/{result_id}/{n}", "rowCount": rows, "uncompressedSize": size, "compressedSize": len(body)}
        for n, (rows, size, body) in enumerate(split.chunks)
    ]
    data.pop("chunkHeaders", None)
    data.pop("qrmk", None)
    if plan.keys == "chunkHeaders":
        md5 = base64.b64encode(hashlib.md5(raw_key).digest()).decode()
        data["chunkHeaders"] = {SSE_KEY: key, SSE_MD5: md5, SSE_ALGORITHM: "AES256"}
    else:
        data["qrmk"] = key
    return reply


# ---------------------------------------------------------------- protocol handling


@dataclass
class Ctx:
    request: Request
    route: str
    raw: bytes
    body: Any
    sql: str | None
    entry: dict[str, Any]
    session: Session | None = None
    abort_event: asyncio.Event | None = None

    def fault(self, sql: str | None = None) -> Rule | None:
        database = self.database()
        self.entry["database"] = database
        rule = STATE.take_rule(self.route, sql if sql is not None else self.sql, database)
        if rule is not None:
            self.entry["fault"] = rule.action
        return rule

    def database(self) -> str | None:
        """The database of the request's session (for a chunk: of the session it was made for)."""
        if self.session is not None:
            return self.session.database
        if self.route == "login":
            return self.request.query_params.get("databaseName")
        if self.route == "chunk":
            parts = self.request.url.path.split("/")
            stored = STATE.results.get(parts[2]) if len(parts) == 4 else None
            return stored.database if stored else None
        return None


PATH_ROUTES = {
    "/session/v1/login-request": "login",
    "/session/token-request": "token",
    "/queries/v1/query-request": "query",
    "/queries/v1/abort-request": "abort",
    "/session": "session",
    "/session/heartbeat": "heartbeat",
}


def route_of(method: str, path: str) -> str:
    if path in PATH_ROUTES:
        return PATH_ROUTES[path]
    if method == "GET" and re.fullmatch(r"/queries/[^/]+/result", path):
        return "result"
    return "chunk" if path.startswith("/fake-chunks/") else "other"


def parse_body(raw: bytes, encoding: str | None) -> Any:
    if not raw:
        return None
    try:
        if encoding == "gzip" or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        body = json.loads(raw)
    except (OSError, ValueError):
        return None
    if isinstance(body, dict) and isinstance(body.get("data"), dict) and "PASSWORD" in body["data"]:
        body = {**body, "data": {**body["data"], "PASSWORD": "***"}}
    return body


def token_of(request: Request) -> str | None:
    match = re.search(r'Token="([^"]*)"', request.headers.get("authorization", ""))
    return match.group(1) if match else None


def authenticate(ctx: Ctx) -> Session | None:
    """The live session of the request's token (and note it in the log), or None."""
    token = token_of(ctx.request)
    session = STATE.by_token.get(token) if token else None
    if session is not None:
        ctx.entry["session"] = session.id
    if session is None or not session.token_alive or session.token != token:
        return None
    ctx.session = session
    return session


def new_token(kind: str) -> str:
    return f"fake-{kind}-{secrets.token_urlsafe(24)}"


async def hang(ctx: Ctx, seconds: float) -> bool:
    """Wait without blocking; True when the request's query was aborted meanwhile."""
    if ctx.abort_event is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(ctx.abort_event.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False


async def pre_fault(ctx: Ctx, rule: Rule | None) -> Response | None:
    """Apply what a rule does before the request is handled; a Response ends the request."""
    if rule is None:
        return None
    if rule.action == "status" and rule.when == "before":
        return status_reply(rule)
    if rule.action == "hang" and rule.when == "before":
        if await hang(ctx, float(rule.spec.get("seconds", 30))):
            return json_reply(canceled(""))
    if rule.action == "session_expired" and ctx.session is not None:
        ctx.session.token_alive = False
        return json_reply(session_expired())
    if rule.action == "master_expired" and ctx.session is not None:
        code = str(rule.spec.get("code", "390114"))
        ctx.session.token_alive = ctx.session.master_alive = False
        ctx.session.master_code = code
        return json_reply(master_error(code) if ctx.route == "token" else session_expired())
    if rule.action == "slow":
        await asyncio.sleep(float(rule.spec.get("ms", 0)) / 1000)
    return None


async def post_fault(ctx: Ctx, rule: Rule | None, response: Response) -> Response:
    """Apply what a rule does after the request was handled."""
    if rule is None or rule.when != "after":
        return response
    if rule.action == "status":
        return status_reply(rule)
    if rule.action == "hang" and await hang(ctx, float(rule.spec.get("seconds", 30))):
        return json_reply(canceled(""))
    return response


async def handle_login(ctx: Ctx) -> Response:
    rule = ctx.fault()
    if (early := await pre_fault(ctx, rule)) is not None:
        return early
    inner = await call_inner(ctx.request, ctx.raw, None)
    reply = inner.json()
    data = reply.get("data") if isinstance(reply, dict) and reply.get("success") else None
    if inner.status != 200 or not isinstance(data, dict) or "token" not in data:
        return await post_fault(ctx, rule, inner.response())
    session = Session(
        int(data.get("sessionId") or len(STATE.by_master) + 1),
        data["token"],
        new_token("session"),
        new_token("master"),
        database=ctx.request.query_params.get("databaseName"),
    )
    STATE.by_token[session.token] = session
    STATE.by_master[session.master] = session
    data["token"], data["masterToken"] = session.token, session.master
    ctx.entry["session"] = session.id
    return await post_fault(ctx, rule, json_reply(reply))


async def handle_token(ctx: Ctx) -> Response:
    session = STATE.by_master.get(token_of(ctx.request) or "")
    if session is not None:
        ctx.entry["session"] = session.id
        ctx.session = session
    rule = ctx.fault()
    if (early := await pre_fault(ctx, rule)) is not None:
        return early
    if session is None:
        reply = master_error("390113")
    elif not session.master_alive:
        reply = master_error(session.master_code)
    else:
        session.token, session.token_alive = new_token("session"), True
        STATE.by_token[session.token] = session
        data = {
            "sessionToken": session.token,
            "validityInSecondsST": 3600,
            "masterToken": session.master,
            "validityInSecondsMT": 14400,
            "sessionId": session.id,
        }
        reply = {"data": data, "code": None, "message": None, "success": True}
    return await post_fault(ctx, rule, json_reply(reply))


async def handle_query(ctx: Ctx) -> Response:
    session = authenticate(ctx)
    if session is None:
        return json_reply(session_expired())
    request_id = ctx.request.query_params.get("requestId")
    ctx.abort_event = asyncio.Event()
    if request_id:
        STATE.inflight.setdefault(request_id, set()).add(ctx.abort_event)
    try:
        rule = ctx.fault()
        if (early := await pre_fault(ctx, rule)) is not None:
            return early
        # Real Snowflake runs a session's statements side by side; the
        # emulator refuses a second one while the first runs ("connection is
        # busy"), so they take turns here. Latency is added outside the turn,
        # so overlapped requests still overlap their waits.
        async with STATE.turn(session):
            inner = await call_inner(ctx.request, ctx.raw, session.inner_token)
        reply = inner.json()
        if inner.status != 200 or not isinstance(reply, dict):
            return await post_fault(ctx, rule, inner.response())
        reply = await chunk_reply(ctx.request, reply, rule, session.database)
        if rule is not None and rule.action == "async":
            data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
            query_id = str(data.get("queryId") or uuid.uuid4())
            code = str(rule.spec.get("code", "333334"))
            polls = int(rule.spec.get("polls", 2))
            STATE.queries[query_id] = AsyncQuery(query_id, request_id, ctx.sql or "", reply, polls, code)
            while len(STATE.queries) > MAX_ASYNC:
                STATE.queries.popitem(last=False)
            reply = in_progress(query_id, code)
        return await post_fault(ctx, rule, json_reply(reply))
    finally:
        if request_id and request_id in STATE.inflight:
            STATE.inflight[request_id].discard(ctx.abort_event)
            if not STATE.inflight[request_id]:
                del STATE.inflight[request_id]


async def handle_result(ctx: Ctx) -> Response:
    if authenticate(ctx) is None:
        return json_reply(session_expired())
    query_id = ctx.request.url.path.split("/")[2]
    query = STATE.queries.get(query_id)
    rule = ctx.fault(query.sql if query else None)
    if (early := await pre_fault(ctx, rule)) is not None:
        return early
    if query is None:
        reply = query_error("000709", f"Statement {query_id} not found", "02000", query_id)
    elif query.aborted:
        reply = canceled(query_id)
    elif query.polls_left != 0:
        if query.polls_left > 0:  # -1: in progress until aborted
            query.polls_left -= 1
        reply = in_progress(query_id, query.code)
    else:
        reply = query.reply
    return await post_fault(ctx, rule, json_reply(reply))


async def handle_abort(ctx: Ctx) -> Response:
    if authenticate(ctx) is None:
        return json_reply(session_expired())
    rule = ctx.fault()
    if (early := await pre_fault(ctx, rule)) is not None:
        return early
    target = ctx.body.get("requestId") if isinstance(ctx.body, dict) else None
    for query in STATE.queries.values():
        if target and query.request_id == target:
            query.aborted = True
    for event in STATE.inflight.get(target or "", set()):
        event.set()
    return await post_fault(ctx, rule, json_reply({"data": None, "code": None, "message": None, "success": True}))


async def handle_chunk(ctx: Ctx) -> Response:
    rule = ctx.fault()
    if (early := await pre_fault(ctx, rule)) is not None:
        return early
    parts = ctx.request.url.path.split("/")
    stored = STATE.results.get(parts[2]) if len(parts) == 4 else None
    index = int(parts[3]) if stored is not None and parts[3].isdigit() else -1
    if stored is None or not 0 <= index < len(stored.bodies):
        return await post_fault(ctx, rule, s3_error(404, "NoSuchKey", "The specified key does not exist."))
    if ctx.request.headers.get(SSE_KEY) != stored.key:
        return await post_fault(ctx, rule, s3_error(403, "AccessDenied", "Access Denied"))
    headers = {"Content-Encoding": "gzip"} if stored.gzip == "header" else None
    response = Response(stored.bodies[index], 200, headers=headers, media_type="application/octet-stream")
    return await post_fault(ctx, rule, response)


async def handle_forward(ctx: Ctx) -> Response:
    """Close, heartbeat and anything else: translate the token (if any) and pass through."""
    session = None
    if "authorization" in ctx.request.headers:
        session = authenticate(ctx)
        if session is None:
            return json_reply(session_expired())
    rule = ctx.fault()
    if (early := await pre_fault(ctx, rule)) is not None:
        return early
    inner = await call_inner(ctx.request, ctx.raw, session.inner_token if session else None)
    if ctx.route == "session" and session and ctx.request.query_params.get("delete") and inner.status == 200:
        session.token_alive = session.master_alive = False
        session.master_code = "390113"
    return await post_fault(ctx, rule, inner.response())


HANDLERS = {
    "login": handle_login,
    "token": handle_token,
    "query": handle_query,
    "result": handle_result,
    "abort": handle_abort,
    "chunk": handle_chunk,
}


def code_of(response: Response) -> str | None:
    if response.media_type != "application/json":
        return None
    try:
        code = json.loads(response.body).get("code")
    except (ValueError, AttributeError):
        return None
    return None if code is None else str(code)


async def protocol(request: Request) -> Response:
    route = route_of(request.method, request.url.path)
    raw = await request.body()
    body = parse_body(raw, request.headers.get("content-encoding"))
    sql = body.get("sqlText") if route == "query" and isinstance(body, dict) else None
    entry: dict[str, Any] = {"route": route, "method": request.method, "path": request.url.path}
    entry.update(query=dict(request.query_params), sql=sql if isinstance(sql, str) else None, body=body)
    entry.update(status=None, code=None, fault=None, key_header=request.headers.get(SSE_KEY), session=None)
    STATE.log.append(entry)
    ctx = Ctx(request, route, raw, body, entry["sql"], entry)
    if STATE.settings.latency_ms > 0:
        await asyncio.sleep(STATE.settings.latency_ms / 1000)
    try:
        response = await HANDLERS.get(route, handle_forward)(ctx)
    except Exception as e:  # a bug here: answer like a broken server, and say why in the log
        logger.exception("snowflake_fake failed on %s %s", request.method, request.url.path)
        response = Response(f"snowflake_fake internal error: {e}\n", 500, media_type="text/plain")
    entry["status"] = response.status_code
    entry["code"] = code_of(response)
    return response


# ---------------------------------------------------------------- control API


async def read_json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError:
        raise ValueError("body is not JSON") from None


async def post_faults(request: Request) -> Response:
    try:
        raw = await read_json(request)
        rules = [Rule.parse(r) for r in (raw.get("faults") if isinstance(raw, dict) else None) or []]
    except (ValueError, TypeError) as e:
        return json_reply({"ok": False, "error": str(e)}, 400)
    STATE.faults.extend(rules)
    return json_reply({"ok": True})


async def get_faults(_: Request) -> Response:
    return json_reply({"faults": [{**r.spec, "skip": r.skip, "times": r.times} for r in STATE.faults]})


async def post_reset(request: Request) -> Response:
    database = (request.query_params.get("database") or "").upper()
    if database:
        # One database's rules only (tests sharing the stack's fake).
        STATE.faults = [r for r in STATE.faults if r.database != database]
        return json_reply({"ok": True})
    STATE.faults.clear()
    STATE.log.clear()
    return json_reply({"ok": True})


async def settings(request: Request) -> Response:
    if request.method == "POST":
        try:
            raw = await read_json(request)
            if not isinstance(raw, dict):
                raise ValueError("settings must be an object")
            STATE.settings.update(raw)
        except (ValueError, TypeError) as e:
            return json_reply({"ok": False, "error": str(e)}, 400)
    return json_reply({"ok": True, "settings": vars(STATE.settings)})


async def get_log(request: Request) -> Response:
    database = (request.query_params.get("database") or "").upper()
    if not database:
        return json_reply({"requests": STATE.log})
    return json_reply({"requests": [e for e in STATE.log if (e.get("database") or "").upper() == database]})


app = Starlette(
    routes=[
        Route("/fake/faults", post_faults, methods=["POST"]),
        Route("/fake/faults", get_faults, methods=["GET"]),
        Route("/fake/reset", post_reset, methods=["POST"]),
        Route("/fake/settings", settings, methods=["GET", "POST"]),
        Route("/fake/log", get_log, methods=["GET"]),
        Route("/{path:path}", protocol, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-rows", type=int, default=0)
    parser.add_argument("--inline-rows", type=int, default=1000)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--gzip", choices=GZIP_MODES, default="header")
    parser.add_argument("--keys", choices=KEY_MODES, default="chunkHeaders")
    args = parser.parse_args()
    STATE.settings.update({k: v for k, v in vars(args).items() if k not in ("host", "port")})
    logging.getLogger("fakesnow").setLevel(logging.WARNING)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
