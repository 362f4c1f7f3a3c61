"""Bulk ``$export`` backfill: journal a server's history in one asynchronous export.

Kick-off ``GET [base]/$export`` with ``Prefer: respond-async`` (``_type`` the watched types,
``_since`` optional) -> 202 and a status URL -> poll it, honouring ``Retry-After`` and
showing ``X-Progress`` -> 200 and a manifest -> download each NDJSON file and journal every
line as a :class:`ResourceVersion` (handed, a batch at a time, to ``sink``). The manifest's
``transactionTime`` becomes every exported type's poll watermark, so polling carries on
from the export without a gap.

Files are fetched only from the configured server (a manifest that points elsewhere is
refused, so credentials never leave it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from fhirbridge.errors import FhirError
from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.retry import parse_retry_after
from fhirbridge.sources.poll import format_instant
from fhirbridge.store.base import Store
from fhirbridge.values import ResourceVersion

__all__ = ["BulkExport", "BulkStats"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class BulkStats:
    """What one export brought in."""

    files: int = 0
    read: int = 0
    new: int = 0
    rejected: int = 0
    transaction_time: str | None = None
    by_type: dict[str, int] = field(default_factory=dict)


class BulkExport:
    """One system-level bulk export into the journal."""

    def __init__(
        self,
        client: FhirClient,
        store: Store,
        *,
        server: str,
        types: Sequence[str],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_wait: float = 3600.0,
        batch: int = 1000,
        progress: Callable[[str], None] | None = None,
        sink: Callable[[list[ResourceVersion]], Awaitable[None]] | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.server = server
        self.types = tuple(types)
        self.sleep = sleep
        self.max_wait = max_wait
        self.batch = batch
        self.progress = progress
        self.sink = sink

    async def run(self, since: datetime | None = None) -> BulkStats:
        """Export, wait, download and journal; returns what was read."""
        params = {"_type": ",".join(self.types)}
        if since is not None:
            params["_since"] = format_instant(since)
        kickoff = await self.client.request(
            "GET",
            "$export",
            params=params,
            headers={"Prefer": "respond-async", "Accept": "application/fhir+json"},
        )
        status_url = kickoff.headers.get("content-location")
        if kickoff.status_code != 202 or not status_url:
            raise FhirError(
                f"the server did not start an asynchronous export (HTTP {kickoff.status_code})"
            )
        manifest = await self._wait(status_url)
        stats = BulkStats(transaction_time=manifest.get("transactionTime"))
        for output in manifest.get("output") or ():
            await self._download(str(output["url"]), str(output.get("type", "")), stats)
        if stats.transaction_time:
            for resource_type in self.types:
                self.store.set_watermark(self.server, resource_type, stats.transaction_time)
        log.info("bulk_export_done", files=stats.files, read=stats.read, new=stats.new)
        return stats

    async def _wait(self, status_url: str) -> dict[str, Any]:
        if not self.client.owns(status_url):
            raise FhirError("refusing an export status URL that is not on the FHIR server")
        waited, delay = 0.0, 1.0
        while True:
            response = await self.client.request("GET", status_url)
            if response.status_code == 200:
                manifest = json.loads(response.content)
                if not isinstance(manifest, dict):
                    raise FhirError("the export manifest is not a JSON object")
                return manifest
            if self.progress is not None:
                self.progress(response.headers.get("x-progress", "in progress"))
            pause = parse_retry_after(
                response.headers.get("retry-after"), now=self.client.clock.now()
            )
            pause = min(pause if pause is not None else delay, 60.0)
            if waited + pause > self.max_wait:
                raise FhirError(f"the export did not finish within {self.max_wait:.0f} s")
            await self.sleep(pause)
            waited += pause
            delay = min(delay * 2, 60.0)

    async def _download(self, url: str, resource_type: str, stats: BulkStats) -> None:
        if not self.client.owns(url):
            raise FhirError(
                f"refusing an export file that is not on the FHIR server ({resource_type})"
            )
        response = await self.client.request(
            "GET", url, headers={"Accept": "application/fhir+ndjson"}
        )
        stats.files += 1
        pending: list[ResourceVersion] = []
        for line in response.content.splitlines():
            if not line.strip():
                continue
            try:
                pending.append(ResourceVersion.from_json(self.server, line))
            except (ValueError, RecursionError) as exc:  # not JSON, not a resource, too deep
                stats.rejected += 1
                log.warning(
                    "bulk_line_rejected", resource_type=resource_type, error=type(exc).__name__
                )
                self.store.dead_letter("bulk", resource_type, f"not a usable resource: {exc}", line)
                continue
            if len(pending) >= self.batch:
                await self._journal(pending, stats)
                pending = []
        await self._journal(pending, stats)

    async def _journal(self, versions: list[ResourceVersion], stats: BulkStats) -> None:
        if not versions:
            return
        new = self.store.append(versions)
        stats.read += len(versions)
        stats.new += len(new)
        for version in new:
            stats.by_type[version.resource_type] = stats.by_type.get(version.resource_type, 0) + 1
        if self.progress is not None:
            self.progress(f"journalled {stats.read}")
        if self.sink is not None and new:
            await self.sink(new)
