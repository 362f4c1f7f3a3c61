"""The write stage: the outbox -> the FHIR server, through the writer."""

from __future__ import annotations

from fhirbridge.pipeline._stats import RunStats
from fhirbridge.writeback.writer import Writer, WriteStats

__all__ = ["WriteStage"]


class WriteStage:
    """Drains the outbox (``Writer.drain``) and counts what it wrote; with no writer (a
    dry run, or no server) it writes nothing."""

    def __init__(self, writer: Writer | None) -> None:
        self.writer = writer

    @property
    def enabled(self) -> bool:
        """Whether this stage writes."""
        return self.writer is not None

    async def write(self, stats: RunStats) -> WriteStats:
        """Perform every pending outbox item; add the figures to ``stats``."""
        written = await self.writer.drain() if self.writer is not None else WriteStats()
        stats.created += written.created
        stats.existing += written.existing
        stats.updated += written.updated
        stats.dead += written.dead
        return written
