"""The operator console: feeds, journal, outbox, dead letters (with replay), recent
transitions and the coordination report, as server-rendered pages and a JSON API.

Build it with :func:`console_app` and serve it alone or mounted in another ASGI app.
"""

from __future__ import annotations

from fhirbridge.console.app import console_app

__all__ = ["console_app"]
