"""Polling source: read what changed since the watermark, journal it, then move the mark.

Each watched type is searched with ``_lastUpdated=ge<watermark - overlap>``, every page
followed, and every resource journalled as a :class:`ResourceVersion` (the journal drops the
repeats the overlap brings). The next watermark is the server's clock when the search
began (the first page's ``Bundle.meta.lastUpdated``, else its ``Date`` header), never the
largest ``meta.lastUpdated`` seen: a resource updated while we page can move past a page
we already read. The watermark moves only after every page is durable.

Servers differ in how they compare instants: some treat ``ge…:10Z`` as the whole second,
others compare exact instants (``gt…:10Z`` matches ``…:10.148Z``). The watermark is kept at
millisecond precision; the search sends it at ``precision`` (``"second"``, floored, which
every server takes, or ``"millisecond"`` where the server's profile says it takes fractional
seconds), always with ``ge`` and minus the overlap, so neither reading loses a version. Only
the ``next`` links are followed: no ``Bundle.total``, no ``last`` link, no ``_history``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import structlog

from fhirbridge.fhir.client import FhirClient, Page
from fhirbridge.store.base import Store
from fhirbridge.values import ResourceVersion, parse_instant

__all__ = ["PollStats", "Poller", "format_instant"]

log = structlog.get_logger(__name__)


Precision = Literal["second", "millisecond"]


def format_instant(value: datetime, precision: Precision = "second") -> str:
    """A FHIR instant in UTC, floored to ``precision``: ``2026-01-02T03:04:05Z`` or
    ``2026-01-02T03:04:05.148Z``."""
    moment = value.astimezone(UTC)
    if precision == "millisecond":
        text = moment.replace(microsecond=moment.microsecond // 1000 * 1000).isoformat(
            timespec="milliseconds"
        )
    else:
        text = moment.replace(microsecond=0).isoformat()
    return text.replace("+00:00", "Z")


def _server_time(page: Page) -> datetime | None:
    stamped = parse_instant((page.bundle.get("meta") or {}).get("lastUpdated"))
    if stamped is not None:
        return stamped
    if page.date:
        try:
            parsed = parsedate_to_datetime(page.date)
        except (TypeError, ValueError):
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


@dataclass(slots=True)
class PollStats:
    """What one poll read."""

    read: int = 0
    new: int = 0
    pages: int = 0
    rejected: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


class Poller:
    """Polls one server for the watched types into the journal (``precision``: how the
    ``_lastUpdated`` search sends the watermark, see the module docstring)."""

    def __init__(
        self,
        client: FhirClient,
        store: Store,
        *,
        server: str,
        types: Sequence[str],
        page_size: int = 100,
        overlap: timedelta = timedelta(minutes=5),
        sort: bool = True,
        progress: Callable[[PollStats], None] | None = None,
        sink: Callable[[list[ResourceVersion]], Awaitable[None]] | None = None,
        precision: Precision = "second",
    ) -> None:
        self.client = client
        self.store = store
        self.server = server
        self.types = tuple(types)
        self.page_size = page_size
        self.overlap = overlap
        self.sort = sort
        self.progress = progress
        self.sink = sink
        self.precision: Precision = precision

    async def poll(self, default_since: datetime, stats: PollStats | None = None) -> PollStats:
        """Poll every watched type once."""
        stats = stats or PollStats()
        for resource_type in self.types:
            await self.poll_type(resource_type, default_since, stats)
        return stats

    async def poll_type(
        self, resource_type: str, default_since: datetime, stats: PollStats
    ) -> None:
        """Poll one type from its watermark (or ``default_since`` on a first run)."""
        mark = parse_instant(self.store.watermark(self.server, resource_type))
        since = (mark - self.overlap) if mark is not None else default_since
        params: dict[str, Any] = {
            "_lastUpdated": f"ge{format_instant(since, self.precision)}",
            "_count": self.page_size,
        }
        if self.sort:
            params["_sort"] = "_lastUpdated"
        next_mark: datetime | None = None
        newest_seen: datetime | None = None
        first = True
        async for page in self.client.pages(resource_type, params):
            if first:
                next_mark, first = _server_time(page), False
            stats.pages += 1
            versions: list[ResourceVersion] = []
            for resource in page.resources:
                try:
                    version = ResourceVersion.from_json(self.server, resource)
                except ValueError as exc:
                    stats.rejected += 1
                    self.store.dead_letter(
                        "poll",
                        resource_type,
                        f"not a usable resource: {exc}",
                        repr(resource).encode(),
                    )
                    continue
                updated = parse_instant(version.last_updated)
                if updated is not None and (newest_seen is None or updated > newest_seen):
                    newest_seen = updated
                versions.append(version)
            new = self.store.append(versions)
            stats.read += len(versions)
            stats.new += len(new)
            stats.by_type[resource_type] = stats.by_type.get(resource_type, 0) + len(new)
            if self.progress is not None:
                self.progress(stats)
            if self.sink is not None and new:
                await self.sink(new)
        # every page is journalled: the mark may move
        mark_to = next_mark or newest_seen
        if mark_to is not None:
            self.store.set_watermark(
                self.server, resource_type, format_instant(mark_to, "millisecond")
            )
        log.info("poll_done", resource_type=resource_type, read=stats.read, new=stats.new)
