"""Backend URLs as they may be shown: in a log line, an error, `beatq status`, a page.

A Redis URL can carry a password in two places: its user part
(`redis://user:PASSWORD@host/0`, `sentinel://:PASSWORD@h1,h2/mymaster`) and its query,
which redis-py reads as connection options (`?password=...`, `?ssl_password=...`).
`shown_url` masks both, and leaves everything else as written, so two processes on
the same backend show the same text.
"""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit

from ..exceptions import ConfigurationError

MASK = "***"


def _secret(option: str) -> bool:
    return "password" in option.lower()


def shown_url(url: str) -> str:
    """`url` with every password in it masked, fit for a log line or an error message."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        # rpartition: a sentinel:// netloc holds several hosts, and only one user part
        user = parts.username or ""
        netloc = f"{user}:{MASK}@{netloc.rpartition('@')[2]}"
    if query and _secret(query):
        pairs = [p.partition("=") for p in query.split("&")]
        query = "&".join(
            f"{name}{eq}{MASK if eq and _secret(name) else value}" for name, eq, value in pairs
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # spliced into the text as written (urlunsplit would drop the // of unix:///path)
    head, sep, tail = url.partition("//")
    if sep and netloc != parts.netloc:
        tail = netloc + tail[len(parts.netloc) :]
    if query != parts.query:
        before, _, after = tail.partition("?")
        tail = f"{before}?{query}{after[len(parts.query) :]}"
    return head + sep + tail


def process_urls(broker_url: str, result_backend: str | None) -> dict[str, str]:
    """The backend URLs a process uses, masked, as each process reports them (a worker's
    heartbeat, a beat's, the dashboard): the broker, and where results are kept (the
    broker's URL again when `result_backend` is unset)."""
    return {
        "broker": shown_url(broker_url),
        "result_backend": shown_url(result_backend or broker_url),
    }


def reported(value: object) -> str | None:
    """A URL another process reported (a heartbeat's), masked here again: a process of
    another version may not have masked it as this one does."""
    return shown_url(value) if isinstance(value, str) else None


def user_and_hosts(
    parts: SplitResult, default_port: int, shown: str, what: str, example: str
) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """The user, password and `host:port` list of a URL naming several hosts
    (`sentinel://`, `redis+cluster://`); one ConfigurationError for a host that is not
    one, naming `what` a host is and an `example` URL (`shown`: the URL, password masked)."""
    users, at, hosts = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = users.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    found = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), str(default_port)
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"broker URL {shown}: {item.strip()!r} is not {what}'s host:port; write {example}"
            )
        found.append((host, int(port)))
    return username, password, found
