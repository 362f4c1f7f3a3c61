"""One writer per journal and FHIR server: who holds the writer lock, and the refusal.

Two engines writing one journal for one server duplicate Tasks (many servers do not serialise
``If-None-Exist``), so ``run``, ``serve`` and ``hl7`` take the journal's writer lock first.
Each store holds it with something that ends with its process, so a holder that died, even
by ``SIGKILL``, has released it and the next one takes over without a stale-lock timeout:

- SQLite: ``flock`` on a lock file beside the journal (one per server); the kernel drops it
  when the process ends;
- PostgreSQL: a session advisory lock, dropped when the connection closes;
- memory: a flag on the store (one process, one journal).

Who holds it is written to the journal's ``lease`` table (name ``writer:<server>``), so that
the refusal, and ``check``, can say host, pid, command and since when. A row left by a holder
that died is overwritten by the next one.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime

from fhirbridge.errors import JournalBusy
from fhirbridge.store import _codec

__all__ = ["Holder", "busy", "writer_lease_name"]


def writer_lease_name(server: str) -> str:
    """The ``lease`` row that says who writes the journal for ``server``."""
    return f"writer:{server}"


@dataclass(frozen=True, slots=True)
class Holder:
    """A process that holds (or asks for) a lock or a lease of the journal.

    ``worker`` identifies it among workers (``host:pid:random``); ``since`` is when it took
    the lock (UTC).
    """

    worker: str
    host: str
    pid: int
    command: str
    since: datetime

    @classmethod
    def here(
        cls, command: str | None = None, *, clock: _codec.Clock = _codec.system_clock
    ) -> Holder:
        """This process: its host name, pid and command line (``sys.argv`` by default)."""
        host = socket.gethostname()
        pid = os.getpid()
        if command is None:
            name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
            command = shlex.join([name, *sys.argv[1:]])
        return cls(
            worker=f"{host}:{pid}:{uuid.uuid4().hex[:8]}",
            host=host,
            pid=pid,
            command=command,
            since=_codec.utc(clock()),
        )

    def describe(self) -> str:
        """``'fhirbridge run' (pid 4242 on host-a) since 2026-12-01 21:30:05 UTC``."""
        return (
            f"'{self.command}' (pid {self.pid} on {self.host}) "
            f"since {self.since:%Y-%m-%d %H:%M:%S} UTC"
        )


def busy(server: str, holder: Holder | None) -> JournalBusy:
    """The one-line refusal when another process writes the journal for ``server``."""
    who = holder.describe() if holder is not None else "another process (not yet recorded)"
    return JournalBusy(
        f"the journal is already being written for server {server!r} by {who}; "
        "stop that process first, or give this one another journal"
    )
