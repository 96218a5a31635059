"""The dashboard's HTTP handling against hostile clients: raw sockets, and a page of another
origin in a real headless Chromium. Every dashboard is a real `beatq dashboard` process.

The central case is a cross-site request smuggled in a refused request's body (a "simple"
POST a web page may send without a preflight): the refusal must close the connection, so
the body is never served as a second request.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import test_dashboard
from tests.conftest import wait_for

# the dashboard module's fixtures, shared
browser = test_dashboard.browser
start_cli = test_dashboard.start_cli
start_dashboard = test_dashboard.start_dashboard
http = test_dashboard.http


# -- raw HTTP --------------------------------------------------------------------------------
def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return "127.0.0.1", int(parts.port or 80)


def exchange(url: str, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send `raw` on one connection and read until the server closes it (or `timeout`)."""
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_to_close(sock)


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


def statuses(data: bytes) -> list[int]:
    """The status codes of the HTTP responses in `data`, in order, each framed by its
    Content-Length (a response's body may run straight into the next one's status line)."""
    found = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        match = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
        assert sep and match, f"not an HTTP response: {data[:200]!r}"
        found.append(int(match[1]))
        length = re.search(rb"(?im)^content-length: *(\d+)", head)
        data = rest[int(length[1]) if length else len(rest) :]
    return found


def request(
    method: str, path: str, headers: dict[str, str], body: bytes = b"", close: bool = True
) -> bytes:
    """One raw request; `close` asks the server to close the connection after its answer."""
    if close:
        headers = {"Connection": "close", **headers}
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def revoke_request(task_id: str, token: str | None = None, close: bool = False) -> bytes:
    """A complete, valid revoke-with-terminate request, as an attacker would smuggle it."""
    headers = {"X-Beatq": "1", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = b'{"terminate": true}'
    return request("POST", f"/api/tasks/{task_id}/revoke", headers, body, close=close)


def revoked_ids(app: Any) -> set[str]:
    return {task_id for task_id, _, _ in app.broker.revoked()}


# -- the desync ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "refusal, status",
    [
        ("no X-Beatq header", 403),
        ("no credentials", 401),
        ("declared body too large", 413),
        ("not JSON", 415),
    ],
)
def test_a_refused_post_never_serves_the_request_smuggled_in_its_body(
    app, start_dashboard, refusal, status
):
    token = uuid.uuid4().hex
    url = start_dashboard(*(["--token", token] if refusal == "no credentials" else []))
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    smuggled = revoke_request(victim, token if refusal == "no credentials" else None)
    auth = {"Authorization": f"Bearer {token}"} if refusal != "no credentials" else {}
    headers = {
        "no X-Beatq header": {"Content-Type": "text/plain"},
        "no credentials": {"Content-Type": "text/plain"},
        "declared body too large": {**auth, "X-Beatq": "1", "Content-Type": "application/json"},
        "not JSON": {**auth, "X-Beatq": "1", "Content-Type": "text/plain"},
    }[refusal]
    if refusal == "declared body too large":
        # the framing says 2 MB follow; what does follow is the smuggled request
        declared = {**headers, "Content-Length": "2000000"}
        head = request("POST", "/api/dead-letters/requeue", declared, close=False)
        raw = head.replace(b"Content-Length: 0\r\n", b"") + smuggled
    else:
        # kept alive, as a browser's connection is: the server alone decides to close it
        raw = request("POST", "/api/dead-letters/requeue", headers, smuggled, close=False)

    answers = exchange(url, raw)
    assert statuses(answers) == [status], answers.decode(errors="replace")
    assert b"Connection: close" in answers
    assert victim not in revoked_ids(app)

    # the same request sent as itself is served: the test would see a smuggled one
    token_given = token if refusal == "no credentials" else None
    sent = exchange(url, revoke_request(victim, token_given, close=True))
    assert statuses(sent) == [200], sent
    wait_for(lambda: victim in revoked_ids(app), 5, "the direct revoke to be recorded")


def test_a_page_of_another_origin_cannot_make_the_dashboard_act(app, start_dashboard, browser):
    """Chromium on another origin sends the smuggling POST with fetch(mode: "no-cors"), which
    needs no preflight; the dashboard refuses it and never revokes."""
    url = start_dashboard()
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    smuggled = revoke_request(victim).decode()
    page = f"""<!doctype html><title>attacker</title><script>
fetch({json.dumps(url + "api/dead-letters/requeue")},
      {{method: "POST", mode: "no-cors", body: {json.dumps(smuggled)}}})
  .then(() => {{ document.title = "sent"; }}, (e) => {{ document.title = "failed " + e; }});
</script>""".encode()

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    attacker = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        # "localhost" against the dashboard's "127.0.0.1": another origin, and another site
        browser.get(f"http://localhost:{attacker.server_address[1]}/")
        title = wait_for(lambda: browser.title if browser.title != "attacker" else "", 10, "fetch")
        assert title == "sent", title  # the POST reached the dashboard (an opaque answer)
    finally:
        attacker.shutdown()
        attacker.server_close()
    # the dashboard has answered that connection; a fresh request is served after it
    assert http(url + "api/state")[0] == 200
    assert victim not in revoked_ids(app)


# -- framing and limits ----------------------------------------------------------------------
@pytest.mark.parametrize("length", ["-1", "abc", "+5", "1e3"])
def test_a_bad_content_length_is_refused_at_once(start_dashboard, length):
    url = start_dashboard("--timeout", "30")
    head = request("POST", "/api/dead-letters/requeue", {"X-Beatq": "1"})
    raw = head.replace(b"Content-Length: 0", f"Content-Length: {length}".encode())
    with socket.create_connection(address(url), timeout=5) as sock:
        sock.sendall(raw)  # and keep the connection open: the answer must not wait for us
        answer = read_to_close(sock)
    assert statuses(answer) == [400], answer
    assert b"bad Content-Length" in answer


def test_connections_past_the_cap_get_503_and_silent_ones_are_closed(start_dashboard):
    url = start_dashboard("--max-connections", "3", "--timeout", "1")
    held = [socket.create_connection(address(url), timeout=10) for _ in range(3)]
    for sock in held:
        sock.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
    try:
        # the server takes connections in order: the fourth is past the cap
        answer = exchange(url, request("GET", "/api/state", {}))
        assert statuses(answer) == [503], answer
        assert b"too many connections (at most 3)" in answer
        assert b"Content-Security-Policy" in answer
        # a silent connection is closed by the server after --timeout, freeing its slot
        for sock in held:
            assert read_to_close(sock) == b""
    finally:
        for sock in held:
            sock.close()
    assert http(url + "api/state")[0] == 200


def test_head_on_the_stream_sends_headers_only(start_dashboard):
    url = start_dashboard()
    answer = exchange(url, request("HEAD", "/api/stream", {}), timeout=5)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert statuses(answer) == [200]
    assert b"Content-Type: text/event-stream" in head
    assert body == b""


def test_the_token_never_reaches_the_log(start_cli):
    token = f"secret-{uuid.uuid4().hex}"
    proc = start_cli(
        "dashboard", "--port", "0", "--token", token, "-l", "debug", marker="dashboard on"
    )
    url = re.search(r"dashboard on (http://\S+/)", proc.log())[1]
    assert statuses(exchange(url, request("GET", f"/?token={token}&q=x", {}))) == [303]
    assert statuses(exchange(url, request("GET", "/?token=wrong-one", {}))) == [401]
    bad_line = b"GET /?token=" + token.encode() + b" HTTP/9.9\r\n\r\n"
    assert b"error" in exchange(url, bad_line)  # refused (answered as HTTP/0.9, headerless)
    wait_for(lambda: proc.log().count("token=***") >= 3, 5, "the three requests in the log")
    assert token not in proc.log() and "wrong-one" not in proc.log()


def test_actions_take_json_booleans_only(app, start_dashboard):
    url = start_dashboard()
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    json_post = {"X-Beatq": "1", "Content-Type": "application/json"}
    status, _, body = http(url + f"api/tasks/{victim}/revoke", json_post, b'{"terminate": "no"}')
    assert (
        status == 400
        and json.loads(body)["error"] == "'terminate' must be true or false, not \"no\""
    )
    status, _, body = http(url + "api/dead-letters/requeue", json_post, b'{"all": "yes"}')
    assert status == 400 and "'all' must be true or false" in json.loads(body)["error"]
    assert victim not in revoked_ids(app)
    plain = {"X-Beatq": "1", "Content-Type": "text/plain"}
    status, _, body = http(url + f"api/tasks/{victim}/revoke", plain, b'{"terminate": false}')
    assert status == 415 and "Content-Type: application/json" in json.loads(body)["error"]
    assert victim not in revoked_ids(app)
    assert http(url + f"api/tasks/{victim}/revoke", json_post, b'{"terminate": false}')[0] == 200
    assert wait_for(lambda: victim in revoked_ids(app), 5, "the revoke")


def test_error_pages_carry_the_security_headers(start_dashboard):
    url = start_dashboard()
    answer = exchange(url, request("OPTIONS", "/api/state", {}))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert statuses(answer) == [501]
    for name in (
        b"Content-Security-Policy",
        b"X-Content-Type-Options: nosniff",
        b"X-Frame-Options",
    ):
        assert name in head, head
    assert "error" in json.loads(body)


@pytest.mark.parametrize(
    "host", ["localhost:5601@evil.example", "127.0.0.1.evil.example", "localhost/x", "[::1]x"]
)
def test_a_host_that_only_starts_like_loopback_is_refused(start_dashboard, host):
    url = start_dashboard()
    answer = exchange(url, request("GET", "/api/state", {}).replace(b"127.0.0.1", host.encode()))
    assert statuses(answer) == [403], answer
