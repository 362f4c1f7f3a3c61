"""``fhirbridge run --workers N``: N worker processes over one shared journal, kept running.

The supervisor starts ``N`` copies of one command (``fhirbridge run`` without ``--workers``),
each a worker that leases its share of the journal's patient lanes
(:class:`fhirbridge.pipeline.WorkerLeases`). It does no engine work itself:

- SIGTERM or SIGINT is forwarded to every worker (each finishes its pass, gives its leases
  up and exits 0); the supervisor exits 0 once they all have, 1 if one failed to stop
  cleanly. A worker still running ``grace`` seconds after the signal is killed.
- A worker that exits by itself (a crash, a ``SIGKILL``) is started again after
  ``restart_delay`` seconds, doubling while it keeps crashing soon after starting (up to a
  minute); its leases run out meanwhile and the other workers take its lanes over. A worker
  that exits 2 (a configuration error) or 4 (the journal refused) needs a person, not a
  restart: the supervisor stops the others and exits with that code.

Worker ``i`` (from 0) gets ``FHIRBRIDGE_WORKER_INDEX=i`` in its environment and, when the
command has a metrics port, that port plus ``i``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import structlog

__all__ = ["Supervisor"]

log = structlog.get_logger(__name__)

#: A worker that ran this long before exiting was not crashing on start.
_STEADY = 60.0
#: A worker's exit codes that a restart cannot mend (the CLI's: 2 configuration, 4 journal).
FATAL_EXITS = frozenset({2, 4})
_MAX_DELAY = 60.0


@dataclass(slots=True)
class _Child:
    index: int
    process: subprocess.Popen[bytes]
    started: float
    delay: float


class Supervisor:
    """Runs ``count`` workers of ``command(i)`` until a stop signal (see the module docstring).

    ``command`` gives worker ``i``'s argument list; ``sleep`` and ``monotonic`` are injected
    for tests.
    """

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        count: int,
        *,
        grace: float = 30.0,
        restart_delay: float = 1.0,
        poll: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.command = command
        self.count = count
        self.grace = grace
        self.restart_delay = restart_delay
        self.poll = poll
        self.sleep = sleep
        self.monotonic = monotonic
        self.restarts = 0
        self._stopping = False
        self._children: dict[int, _Child] = {}
        self._due: dict[int, tuple[float, float]] = {}  # index -> (start at, next delay)
        self._fatal: int | None = None  # a worker's exit code that stops them all

    def stop(self, *_: object) -> None:
        """Stop every worker (what SIGTERM and SIGINT do; safe from a signal handler)."""
        if self._stopping:
            return
        self._stopping = True
        for child in self._children.values():
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)

    def _start(self, index: int, delay: float) -> None:
        if self._stopping:
            return
        # a worker is one process: a worker count set in the environment is not inherited
        env = {**os.environ, "FHIRBRIDGE_WORKER_INDEX": str(index), "FHIRBRIDGE_RUN_WORKERS": "1"}
        argv = list(self.command(index))
        process = subprocess.Popen(argv, env=env)  # noqa: S603 - the command line of a worker
        self._children[index] = _Child(index, process, self.monotonic(), delay)
        log.info("worker_started", index=index, pid=process.pid)
        if self._stopping:  # the stop came while this one was starting
            process.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Start the workers and supervise them until stopped; the exit code (0: clean)."""
        handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.count):
                self._start(index, self.restart_delay)
            while not self._stopping:
                self._watch()
                self.sleep(self.poll)
            code = self._wind_down()
            return self._fatal if self._fatal is not None else code
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("supervisor_stopping", signal=signal.Signals(signum).name)
        self.stop()

    def _watch(self) -> None:
        now = self.monotonic()
        for index, child in list(self._children.items()):
            code = child.process.poll()
            if code is None or self._stopping:
                continue
            del self._children[index]
            if code in FATAL_EXITS:  # the configuration or the journal needs a person
                log.error("worker_cannot_run", index=index, pid=child.process.pid, code=code)
                self._fatal = code
                self.stop()
                return
            ran = now - child.started
            wait = self.restart_delay if ran >= _STEADY else child.delay
            log.warning("worker_exited", index=index, pid=child.process.pid, code=code)
            self._due[index] = (now + wait, min(wait * 2, _MAX_DELAY))
        for index, (at, delay) in list(self._due.items()):
            if now >= at and not self._stopping:
                del self._due[index]
                self.restarts += 1
                self._start(index, delay)

    def _wind_down(self) -> int:
        deadline = self.monotonic() + self.grace
        clean = True
        for child in self._children.values():
            left = max(0.0, deadline - self.monotonic())
            try:
                code = child.process.wait(timeout=left)
            except subprocess.TimeoutExpired:
                log.warning("worker_killed", index=child.index, pid=child.process.pid)
                child.process.kill()
                code = child.process.wait()
            if code not in (0, -signal.SIGTERM):
                clean = False
                log.warning("worker_stopped_uncleanly", index=child.index, code=code)
        log.info("supervisor_stopped", restarts=self.restarts)
        return 0 if clean else 1
