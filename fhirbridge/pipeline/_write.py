"""The write stage: the outbox -> the FHIR server, through the writer."""

from __future__ import annotations

from fhirbridge.pipeline._leases import WorkerLeases
from fhirbridge.pipeline._stats import RunStats
from fhirbridge.writeback.writer import Writer, WriteStats

__all__ = ["WriteStage"]


class WriteStage:
    """Drains the outbox (``Writer.drain``) and counts what it wrote; with no writer (a
    dry run, or no server) it writes nothing. With ``leases`` (a worker sharing the
    journal) it writes only its lanes' items, leased while it writes them."""

    def __init__(self, writer: Writer | None, leases: WorkerLeases | None = None) -> None:
        self.writer = writer
        self.leases = leases

    @property
    def enabled(self) -> bool:
        """Whether this stage writes."""
        return self.writer is not None

    async def write(self, stats: RunStats) -> WriteStats:
        """Perform every pending outbox item (of the lanes held); add the figures to ``stats``."""
        written = WriteStats()
        if self.writer is not None and self.leases is None:
            written = await self.writer.drain()
        elif self.writer is not None and self.leases is not None:
            try:
                written = await self.writer.drain(claim=self.leases.claim)
            finally:
                self.leases.done_writing()
        stats.created += written.created
        stats.existing += written.existing
        stats.updated += written.updated
        stats.dead += written.dead
        return written
