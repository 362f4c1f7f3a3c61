"""One writer per journal, between real processes: refused while held, free when the holder
exits, taken over when it is killed; and ``fhirbridge run`` refusing with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirbridge.errors import JournalBusy
from fhirbridge.store import PostgresStore, SqliteStore, Store

#: A child that takes the writer lock, says so on stdout, then waits for its stdin to close.
HOLDER = textwrap.dedent(
    """
    import sys
    from fhirbridge.store import PostgresStore, SqliteStore
    kind, where, schema = sys.argv[1:4]
    store = SqliteStore(where) if kind == "sqlite" else PostgresStore(where, schema=schema)
    store.migrate()
    with store.acquire_writer("default"):
        print("held", flush=True)
        sys.stdin.read()
    store.close()
    """
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """``(kind, path or URL, schema)`` of an empty journal on each backend."""
    if request.param == "sqlite":
        yield ("sqlite", str(tmp_path / "journal.db"), "")
    else:
        url = request.getfixturevalue("postgres_url")
        yield ("postgres", url, request.getfixturevalue("postgres_schema"))


def open_journal(journal: tuple[str, str, str]) -> Store:
    """This process's store on the journal."""
    kind, where, schema = journal
    store: Store = SqliteStore(where) if kind == "sqlite" else PostgresStore(where, schema=schema)
    store.migrate()
    return store


@pytest.fixture
def holder_process(journal: tuple[str, str, str]) -> Iterator[subprocess.Popen[str]]:
    """A child process holding the writer lock for server ``default``."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, *journal],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        try:
            assert child.stdout.readline().strip() == "held"
            yield child
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)


def test_a_second_process_is_refused_then_takes_over_after_a_kill(
    journal: tuple[str, str, str], holder_process: subprocess.Popen[str]
) -> None:
    """While the child holds the lock this process is refused, with the child's pid in the
    message; once the child is killed (SIGKILL: no clean-up) the lock is free at once."""
    store = open_journal(journal)
    try:
        with pytest.raises(JournalBusy, match=rf"pid {holder_process.pid} on "):
            store.acquire_writer("default").__enter__()
        holder_process.send_signal(signal.SIGKILL)
        holder_process.wait(timeout=10)

        with store.acquire_writer("default") as held:
            current = store.writer("default")
            assert current is not None and current.pid == held.pid == os.getpid()
    finally:
        store.close()


def test_the_lock_is_free_after_the_holder_exits(
    journal: tuple[str, str, str], holder_process: subprocess.Popen[str]
) -> None:
    """A holder that finishes normally releases the lock and its record."""
    assert holder_process.stdin is not None
    holder_process.stdin.close()
    assert holder_process.wait(timeout=10) == 0

    store = open_journal(journal)
    try:
        assert store.writer("default") is None
        with store.acquire_writer("default"):
            pass
    finally:
        store.close()


@pytest.mark.parametrize("journal", ["sqlite"], indirect=True)
def test_fhirbridge_run_refuses_a_second_writer(
    journal: tuple[str, str, str], holder_process: subprocess.Popen[str], tmp_path: Path
) -> None:
    """``fhirbridge run --once`` on a journal another process writes exits 4 with one line
    naming that process, before it reaches the FHIR server."""
    config = tmp_path / "fhirbridge.yaml"
    config.write_text(
        f"fhir:\n  base_url: http://127.0.0.1:1/fhir\nstore:\n  url: sqlite:///{journal[1]}\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "fhirbridge", "--config", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "already being written for server 'default'" in lines[0]
    assert f"pid {holder_process.pid} on " in lines[0]


@pytest.mark.parametrize(
    "journal", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_replay_is_a_worker_on_a_shared_journal_and_the_one_writer_on_sqlite(
    journal: tuple[str, str, str],
    holder_process: subprocess.Popen[str],
    tmp_path: Path,
) -> None:
    """``replay`` (like ``hl7`` and ``backfill``) on a SQLite journal another process writes
    is refused (exit 4); on PostgreSQL it is one more worker of the shared journal (its
    leases keep it off the lanes others hold), so the writer lock does not stop it: it goes
    on to the FHIR server (unreachable here)."""
    kind, where, schema = journal
    url = f"sqlite:///{where}" if kind == "sqlite" else f"{where}?options=-csearch_path%3D{schema}"
    config = tmp_path / "fhirbridge.yaml"
    config.write_text(
        f"fhir:\n  base_url: http://127.0.0.1:1/fhir\nstore:\n  url: {url}\n", encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, "-m", "fhirbridge", "--config", str(config), "replay"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    if kind == "sqlite":
        assert done.returncode == 4, done.stderr
        assert "already being written" in done.stderr
    else:  # past the journal, on to the (unreachable) FHIR server
        assert "already being written" not in done.stderr
        assert done.returncode == 3, done.stderr
        assert "cannot reach the FHIR server" in done.stderr
