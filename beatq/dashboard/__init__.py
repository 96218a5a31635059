"""The web dashboard: `beatq -A proj dashboard --port 5555`.

api.py reads the broker into JSON-ready snapshots and carries out the page's actions;
server.py serves the page (static/, shipped as package data, no build step), the JSON API
and the live stream; timefmt.py makes every time string in its own zone.
"""

from .api import Dashboard
from .server import DashboardServer, serve

__all__ = ["Dashboard", "DashboardServer", "serve"]
