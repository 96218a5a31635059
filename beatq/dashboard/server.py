"""The dashboard's HTTP server: the page, a small JSON API and a Server-Sent Events stream.

    GET  /                                  the page (static/index.html)
    GET  /static/NAME                       its CSS and JS
    GET  /api/state?q=TEXT                  the snapshot (JSON), tasks filtered by TEXT
    GET  /api/stream?q=TEXT                 the snapshot again every second, or at once
                                            when an event arrives (text/event-stream)
    GET  /api/tasks/ID                      one task, with its traceback
    POST /api/schedules/NAME/pause|resume
    POST /api/dead-letters/requeue          {"ids": [...]} or {"all": true}
    POST /api/tasks/ID/revoke               {"terminate": false}

Live updates are Server-Sent Events: one long response per open page, which the
browser's EventSource reconnects by itself. Auth, when configured, is a token
(`Authorization: Bearer`, or `?token=` once, which sets a cookie for the rest) or HTTP
basic auth; both are compared in constant time. POSTs must carry `X-Beatq: 1`, a header a
page of another origin cannot send without a CORS preflight this server never grants.
A server bound to loopback also refuses requests whose Host is not a loopback name, so
a web page cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..exceptions import BrokerError, ConfigurationError
from .api import Dashboard, NotFound

log = logging.getLogger("beatq.dashboard")

COOKIE = "beatq_dashboard_token"
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Auth:
    """A token, basic-auth credentials, both (either passes) or none (everything passes)."""

    def __init__(self, token: str | None = None, basic: str | None = None) -> None:
        if token is not None and not token.strip():
            raise ConfigurationError("--token is empty; give a long random string")
        if basic is not None:
            user, sep, password = basic.partition(":")
            if not sep or not user or not password:
                raise ConfigurationError(
                    "--basic-auth must be USER:PASSWORD, both non-empty (e.g. admin:s3cret)"
                )
        self.token = token.encode() if token else None
        self.basic = basic.encode() if basic else None

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.basic is not None

    def check_token(self, given: str | None) -> bool:
        return self.token is not None and given is not None and _same(given.encode(), self.token)

    def allows(self, headers: Any) -> bool:
        if not self.enabled:
            return True
        scheme, _, value = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and self.check_token(value.strip()):
            return True
        if scheme.lower() == "basic" and self.basic is not None:
            try:
                given = base64.b64decode(value.strip(), validate=True)
            except ValueError:
                given = b""
            if _same(given, self.basic):
                return True
        try:
            morsel = SimpleCookie(headers.get("Cookie") or "").get(COOKIE)
        except CookieError:
            return False
        return (
            morsel is not None
            and self.token is not None
            and _same(morsel.value.encode(), self.cookie_value().encode())
        )

    def cookie_value(self) -> str:
        """What the session cookie holds: a digest of the token, not the token itself
        (and cookie-safe whatever characters the token has)."""
        assert self.token is not None
        return hashlib.sha256(b"beatq-dashboard\0" + self.token).hexdigest()


def _same(given: bytes, expected: bytes) -> bool:
    # compare_digest takes the same time wherever the first difference is
    return hmac.compare_digest(given, expected)


class DashboardServer(ThreadingHTTPServer):
    """Serves `board` on (host, port) until `shutdown()`; `port` 0 picks a free port."""

    daemon_threads = True
    interval = 1.0  # seconds between pushes on the stream when nothing happens

    def __init__(self, board: Dashboard, host: str, port: int, auth: Auth) -> None:
        if not is_loopback(host) and not auth.enabled:
            raise ConfigurationError(
                f"refusing to serve the dashboard on {host} without authentication: "
                "add --token TOKEN or --basic-auth USER:PASSWORD, or bind to 127.0.0.1"
            )
        self.board = board
        self.auth = auth
        self.loopback = is_loopback(host)
        self.stopping = threading.Event()
        self.static = {
            name: (resources.files(__package__) / "static" / name).read_bytes() for name in STATIC
        }
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def stop(self) -> None:
        """Stop serving (from any thread but the one in serve_forever) and end the streams."""
        self.stopping.set()
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"
    server_version = "beatq-dashboard"

    # -- plumbing --------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug("%s " + format, self.client_address[0], *args)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(status, body, "application/json", headers)

    def _host_ok(self) -> bool:
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").strip()
        if host.startswith("["):  # [::1]:5555
            name = host[1 : host.find("]")]
        else:
            name = host.rsplit(":", 1)[0]
        return is_loopback(name)

    def _gate(self) -> bool:
        """True if the request may go on; otherwise the refusal has been sent."""
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "this dashboard answers on localhost only")
            return False
        if self.server.auth.allows(self.headers):
            return True
        headers = {}
        if self.server.auth.basic is not None:
            headers["WWW-Authenticate"] = 'Basic realm="beatq dashboard", charset="UTF-8"'
        self._error(
            HTTPStatus.UNAUTHORIZED,
            "authentication required: open the page with ?token=TOKEN, or sign in",
            headers,
        )
        return False

    # -- GET -------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802 (the base's naming)
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/" and "token" in query and self._host_ok():
            self._login(query["token"][0])
            return
        if not self._gate():
            return
        try:
            if url.path in ("/", "/index.html"):
                self._static("index.html")
            elif url.path.startswith("/static/"):
                self._static(url.path[len("/static/") :])
            elif url.path == "/api/state":
                self._json(HTTPStatus.OK, self.server.board.state(_query(query)))
            elif url.path == "/api/stream":
                self._stream(_query(query))
            elif url.path.startswith("/api/tasks/"):
                task_id = unquote(url.path[len("/api/tasks/") :])
                self._json(HTTPStatus.OK, self.server.board.task(task_id))
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page {url.path!r}")
        except NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except BrokerError as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"broker unreachable: {exc}")

    def _login(self, token: str) -> None:
        """`/?token=…`: check it, keep it in a cookie, and drop it from the address bar."""
        if not self.server.auth.check_token(token):
            self._error(HTTPStatus.UNAUTHORIZED, "wrong token")
            return
        cookie = f"{COOKIE}={self.server.auth.cookie_value()}; Path=/; HttpOnly; SameSite=Strict"
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})

    def _static(self, name: str) -> None:
        if name not in STATIC:
            self._error(HTTPStatus.NOT_FOUND, f"no such file {name!r}")
            return
        self._send(HTTPStatus.OK, self.server.static[name], STATIC[name])

    def _stream(self, text: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Accel-Buffering", "no")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        server = self.server
        while not server.stopping.is_set():
            try:
                data = json.dumps(server.board.state(text))
                chunk = f"event: state\ndata: {data}\n\n"
            except BrokerError as exc:
                chunk = f"event: failure\ndata: {json.dumps(f'broker unreachable: {exc}')}\n\n"
            try:
                self.wfile.write(chunk.encode())
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, OSError):
                return
            # at most five pushes a second however fast events come, at least one a second
            if server.stopping.wait(0.2):
                return
            server.board.wait_for_change(server.interval)

    # -- POST ------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        if not self._gate():
            return
        if self.headers.get("X-Beatq") != "1":
            self._error(HTTPStatus.FORBIDDEN, "missing header X-Beatq: 1")
            return
        try:
            body = self._body()
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
        board = self.server.board
        try:
            if (
                len(parts) == 4
                and parts[:2] == ["api", "schedules"]
                and parts[3]
                in (
                    "pause",
                    "resume",
                )
            ):
                board.set_paused(parts[2], parts[3] == "pause")
                self._json(HTTPStatus.OK, {"entry": parts[2], "paused": parts[3] == "pause"})
            elif len(parts) == 4 and parts[:2] == ["api", "tasks"] and parts[3] == "revoke":
                board.revoke(parts[2], terminate=bool(body.get("terminate")))
                self._json(HTTPStatus.OK, {"revoked": parts[2]})
            elif parts == ["api", "dead-letters", "requeue"]:
                ids = body.get("ids")
                if not body.get("all") and not (
                    isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)
                ):
                    raise ValueError('send {"ids": ["…"]} or {"all": true}')
                moved = board.requeue(None if body.get("all") else ids)
                self._json(HTTPStatus.OK, {"requeued": moved})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such action {self.path!r}")
        except NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except BrokerError as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"broker unreachable: {exc}")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1_000_000:
            raise ValueError("request body too large")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise ValueError("request body is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("request body must be a JSON object")
        return data


def _query(query: dict[str, list[str]]) -> str:
    return (query.get("q") or [""])[0].strip()[:200]


def serve(
    board: Dashboard,
    host: str = "127.0.0.1",
    port: int = 5555,
    token: str | None = None,
    basic_auth: str | None = None,
) -> DashboardServer:
    """A bound server (not yet serving): call `serve_forever()`, and `stop()` to end it."""
    return DashboardServer(board, host, port, Auth(token, basic_auth))
