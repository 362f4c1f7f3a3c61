"""``run --workers N``'s supervisor, as real processes: it starts N workers, starts a crashed
one again, forwards SIGTERM to all and exits 0 once they stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

#: A worker: notes its start in ``<folder>/<index>.<n>``; the first start of worker 0 crashes,
#: every other start waits for SIGTERM and exits 0.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    folder, index = sys.argv[1], os.environ["FHIRBRIDGE_WORKER_INDEX"]
    starts = len([n for n in os.listdir(folder) if n.startswith(index + ".")])
    open(os.path.join(folder, f"{index}.{starts}"), "w").close()
    open(os.path.join(folder, f"env.{index}"), "w").write(os.environ["FHIRBRIDGE_RUN_WORKERS"])
    if index == "0" and starts == 0:
        os._exit(int(os.environ.get("CRASH_CODE", "3")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(0.05)
    """
)

SUPERVISOR = textwrap.dedent(
    """
    import sys
    from fhirbridge.supervisor import Supervisor
    folder, child = sys.argv[1], sys.argv[2]
    code = Supervisor(lambda i: [sys.executable, "-c", child, folder], 3,
                      restart_delay=0.1, poll=0.05, grace=10).run()
    sys.exit(code)
    """
)


FHIRBRIDGE = [sys.executable, "-m", "fhirbridge"]


def wait_for(condition: object, within: float = 30.0) -> None:
    """Wait (polling) until ``condition()`` holds."""
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_supervisor_restarts_a_crash_and_stops_cleanly(tmp_path: Path) -> None:
    """Three workers start; worker 0 crashes and is started again; SIGTERM stops all three
    and the supervisor exits 0."""
    with subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(tmp_path), CHILD]) as sup:
        try:
            wait_for(lambda: {p.name for p in tmp_path.iterdir()} >= {"0.0", "0.1", "1.0", "2.0"})
            sup.send_signal(signal.SIGTERM)
            assert sup.wait(30) == 0
        finally:
            if sup.poll() is None:
                sup.kill()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("env.")) == [
        "0.0",
        "0.1",
        "1.0",
        "2.0",
    ]
    # a worker count in the supervisor's environment is not inherited: a worker is one process
    assert {(tmp_path / f"env.{i}").read_text() for i in range(3)} == {"1"}


def test_a_worker_that_needs_a_person_stops_them_all_with_its_code(tmp_path: Path) -> None:
    """Worker 0 exits 2 (a configuration error): no restart storm; the others are stopped
    and the supervisor exits 2, so systemd's RestartPreventExitStatus holds."""
    env = {**os.environ, "CRASH_CODE": "2", "FHIRBRIDGE_RUN_WORKERS": "3"}
    with subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(tmp_path), CHILD], env=env) as sup:
        try:
            assert sup.wait(30) == 2
        finally:
            if sup.poll() is None:
                sup.kill()
    assert "0.1" not in {p.name for p in tmp_path.iterdir()}


def test_workers_on_sqlite_are_refused_in_one_line(tmp_path: Path) -> None:
    """``run --workers 2`` on a SQLite journal exits 2 saying why: SQLite has one writer."""
    config = tmp_path / "fhirbridge.yaml"
    journal = tmp_path / "journal.db"
    config.write_text(
        f"fhir:\n  base_url: http://127.0.0.1:1/fhir\nstore:\n  url: sqlite:///{journal}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [*FHIRBRIDGE, "--config", str(config), "run", "--workers", "2", "--new-journal"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "--workers needs a journal workers can share" in line
    assert "a SQLite journal has one writer" in line
