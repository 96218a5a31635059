"""The dashboard's HTTP server: the page, a small JSON API and a Server-Sent Events stream.

    GET  /                                  the page (static/index.html)
    GET  /static/NAME                       its CSS and JS
    GET  /api/state?q=TEXT                  the snapshot (JSON), tasks filtered by TEXT
    GET  /api/stream?q=TEXT                 the snapshot again every second, or at once
                                            when an event arrives (text/event-stream)
    GET  /api/tasks/ID                      one task, with its traceback
    GET  /api/schedules/NAME?limit=N        an entry and its newest runs (schedules.py)
    POST /api/schedules                     add a store entry
    POST /api/schedules/NAME/pause|resume|update|remove|trigger|backfill
    POST /api/dead-letters/requeue          {"ids": [...]} or {"all": true}
    POST /api/tasks/ID/revoke               {"terminate": false}

Live updates are Server-Sent Events: one long response per open page, which the
browser's EventSource reconnects by itself. Auth, when configured, is a token
(`Authorization: Bearer`, or `?token=` once, which sets a cookie for the rest) or HTTP
basic auth; both are compared in constant time. POSTs must carry `X-Beatq: 1` and
`Content-Type: application/json`, which a page of another origin cannot send without a CORS
preflight this server never grants. A server bound to loopback also refuses requests whose
Host is not a loopback name, so a web page cannot reach it through DNS rebinding.

Framing is decided in one place (`Handler.parse_request`): a request's declared body is read
in full before anything else looks at the request, and a malformed or oversized framing is
refused at once; every error answer closes the connection. So no request body is ever parsed
as the next request on a kept-alive connection (a cross-site "simple" POST cannot smuggle a
request past the checks). Each connection has a socket timeout, and at most
`max_connections` are served at once (live streams included); past that, 503.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import threading
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..exceptions import BrokerError, ConfigurationError, ScheduleError
from .api import Dashboard, NotFound
from .schedules import history_limit, refusal

log = logging.getLogger("beatq.dashboard")

COOKIE = "beatq_dashboard_token"
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "schedules.js": "text/javascript; charset=utf-8",
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
MAX_BODY = 1_000_000  # bytes: the API's bodies are a few hundred
TIMEOUT = 10.0  # seconds a connection may stay silent (headers, body, or between requests)
MAX_CONNECTIONS = 64
# a Host header: a name or [IPv6], then an optional port; nothing else (no userinfo, no path)
HOST_HEADER = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::\d{1,5})?")
SECRET_IN_QUERY = re.compile(r"(token=)[^&\s\"']*", re.IGNORECASE)


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

    def __init__(
        self,
        board: Dashboard,
        host: str,
        port: int,
        auth: Auth,
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = TIMEOUT,
    ) -> None:
        if max_connections < 1:
            raise ConfigurationError(f"--max-connections must be at least 1, not {max_connections}")
        if not timeout > 0:
            raise ConfigurationError(f"--timeout must be positive seconds, not {timeout}")
        if not is_loopback(host) and not auth.enabled:
            raise ConfigurationError(
                f"refusing to serve the dashboard on {host} without authentication: "
                "add --token TOKEN or --basic-auth USER:PASSWORD, or bind to 127.0.0.1"
            )
        self.board = board
        self.auth = auth
        self.loopback = is_loopback(host)
        self.stopping = threading.Event()
        self.max_connections = max_connections
        self.timeout_seconds = timeout
        self.slots = threading.BoundedSemaphore(max_connections)
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

    def process_request(self, request: Any, client_address: Any) -> None:
        # one thread per connection, but never more than max_connections of them
        if not self.slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _refuse_busy(self, request: socket.socket) -> None:
        """503 on a connection past the cap, written here in the accepting thread: a small
        answer into a fresh socket's empty buffer does not block."""
        body = json.dumps(
            {"error": f"too many connections (at most {self.max_connections}); try again later"}
        ).encode()
        head = [
            "HTTP/1.1 503 Service Unavailable",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            "Retry-After: 1",
            *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
        ]
        try:
            request.settimeout(1.0)
            request.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        except OSError:
            pass
        log.warning(
            "dashboard: refused a connection: %d already open (--max-connections)",
            self.max_connections,
        )
        self.shutdown_request(request)


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"
    server_version = "beatq-dashboard"
    body = b""

    def setup(self) -> None:
        self.timeout = self.server.timeout_seconds  # StreamRequestHandler puts it on the socket
        super().setup()

    # -- plumbing --------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        # the request line may carry ?token=...: never write a credential to a log
        log.debug("%s %s", self.client_address[0], SECRET_IN_QUERY.sub(r"\1***", format % args))

    def parse_request(self) -> bool:
        """The base's parsing, then the body's framing, decided here for every request:
        the declared body is read in full now, so it can never be taken for the next
        request, and a framing this server does not trust is refused at once."""
        self.body = b""
        if not super().parse_request():
            return False
        if self.headers.get("Transfer-Encoding") is not None:
            self.send_error(HTTPStatus.NOT_IMPLEMENTED, "chunked request bodies are not supported")
            return False
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            self.send_error(HTTPStatus.BAD_REQUEST, "more than one Content-Length header")
            return False
        declared = lengths[0].strip() if lengths else "0"
        if not declared.isascii() or not declared.isdigit():
            self.send_error(HTTPStatus.BAD_REQUEST, f"bad Content-Length {declared[:20]!r}")
            return False
        if int(declared) > MAX_BODY:
            self.send_error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body too large ({declared} bytes; at most {MAX_BODY})",
            )
            return False
        self.body = self.rfile.read(int(declared))
        if len(self.body) < int(declared):  # the client hung up mid-body
            self.close_connection = True
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base's errors (bad request line, unsupported method...) in this server's
        shape: JSON, the security headers, and the connection closed."""
        self._error(code, message or self.responses.get(code, ("error",))[0])

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
        if status >= 400:
            # a refusal never leaves a connection open for whatever follows on it
            self.send_header("Connection", "close")
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
        host = HOST_HEADER.fullmatch((self.headers.get("Host") or "").strip())
        return host is not None and is_loopback(host["v6"] or host["name"])

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
            elif len(parts := url.path.split("/")) == 4 and parts[1:3] == ["api", "schedules"]:
                entry = self.server.board.schedules.detail(unquote(parts[3]), history_limit(query))
                self._json(HTTPStatus.OK, entry)
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page {url.path!r}")
        except NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except ScheduleError as exc:
            self._refuse(exc)
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
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
        body = self.server.static[name]
        if name == "index.html":
            body = body.replace(b"FIRST_STATE", self._first_state())
        self._send(HTTPStatus.OK, body, STATIC[name])

    def _first_state(self) -> bytes:
        """The snapshot the page renders as it loads, before its stream connects: JSON in
        a data block (not run as script), `<` escaped so no text in it can end the block."""
        try:
            state = self.server.board.state("")
        except BrokerError:
            return b"null"  # the stream then says the broker is unreachable
        return json.dumps(state).replace("<", "\\u003c").encode()

    def _stream(self, text: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Accel-Buffering", "no")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")  # the stream ends only with the connection
        self.end_headers()
        if self.command == "HEAD":
            return
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
        if self.headers.get_content_type() != "application/json":
            self._error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the body as Content-Type: application/json"
            )
            return
        try:
            body = self._body()
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
            return
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
        board = self.server.board
        entry_action = len(parts) == 4 and parts[:2] == ["api", "schedules"] and parts[3]
        try:
            if entry_action in ("pause", "resume"):
                board.set_paused(parts[2], parts[3] == "pause")
                self._json(HTTPStatus.OK, {"entry": parts[2], "paused": parts[3] == "pause"})
            elif parts == ["api", "schedules"]:
                self._json(HTTPStatus.OK, board.schedules.add(body))
            elif entry_action in ("update", "backfill"):
                act = getattr(board.schedules, entry_action)
                self._json(HTTPStatus.OK, act(parts[2], body))
            elif entry_action in ("remove", "trigger"):
                self._json(HTTPStatus.OK, getattr(board.schedules, entry_action)(parts[2]))
            elif len(parts) == 4 and parts[:2] == ["api", "tasks"] and parts[3] == "revoke":
                board.revoke(parts[2], terminate=_flag(body, "terminate"))
                self._json(HTTPStatus.OK, {"revoked": parts[2]})
            elif parts == ["api", "dead-letters", "requeue"]:
                ids = body.get("ids")
                everything = _flag(body, "all")
                if not everything and not (
                    isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)
                ):
                    raise ValueError('send {"ids": ["…"]} or {"all": true}')
                moved = board.requeue(None if everything else ids)
                self._json(HTTPStatus.OK, {"requeued": moved})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such action {self.path!r}")
        except NotFound as exc:
            self._error(HTTPStatus.NOT_FOUND, str(exc))
        except ScheduleError as exc:
            self._refuse(exc)
        except ValueError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except BrokerError as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, f"broker unreachable: {exc}")

    def _refuse(self, exc: ScheduleError) -> None:
        """A schedule refusal: its message and the field it names, for the form."""
        status, data = refusal(exc)
        self._send(status, json.dumps(data).encode(), "application/json")

    def _body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            raise ValueError("request body is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("request body must be a JSON object")
        return data


def _flag(body: dict[str, Any], name: str) -> bool:
    """A yes/no field of a POST body: absent is false; anything but a JSON boolean is refused
    (`"no"` is truthy in Python, and must not terminate a task)."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name!r} must be true or false, not {json.dumps(value)}")
    return value


def _query(query: dict[str, list[str]]) -> str:
    return (query.get("q") or [""])[0].strip()[:200]


def serve(
    board: Dashboard,
    host: str = "127.0.0.1",
    port: int = 5555,
    token: str | None = None,
    basic_auth: str | None = None,
    max_connections: int = MAX_CONNECTIONS,
    timeout: float = TIMEOUT,
) -> DashboardServer:
    """A bound server (not yet serving): call `serve_forever()`, and `stop()` to end it."""
    return DashboardServer(board, host, port, Auth(token, basic_auth), max_connections, timeout)
