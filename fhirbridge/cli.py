"""The ``fhirbridge`` command line: a thin layer over :class:`fhirbridge.Bridge`.

Every option also reads a ``FHIRBRIDGE_*`` environment variable. Errors print one line
and exit non-zero (2: configuration or rules, 3: FHIR server, 4: journal, 1: other);
``--verbose`` adds the traceback and debug logs.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from fhirbridge import __version__
from fhirbridge.clock import Clock, FixedClock, SystemClock
from fhirbridge.config import Config, load_config
from fhirbridge.errors import ConfigError, FhirBridgeError, FhirError, StoreError
from fhirbridge.logs import configure
from fhirbridge.values import parse_instant

T = TypeVar("T")

EXIT_CODES: tuple[tuple[type[FhirBridgeError], int], ...] = (
    (ConfigError, 2),
    (FhirError, 3),
    (StoreError, 4),
)


class _State:
    def __init__(self, config_path: Path | None, verbose: bool) -> None:
        self.config_path = config_path
        self.verbose = verbose

    def config(self) -> Config:
        if self.config_path is None:
            click.echo(
                "fhirbridge: error: no configuration: pass --config FILE or set "
                "FHIRBRIDGE_CONFIG (examples/sekmet.yaml is a starting point)",
                err=True,
            )
            raise SystemExit(2)
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            if self.verbose:
                traceback.print_exc()
            click.echo(f"fhirbridge: error: {exc}", err=True)
            raise SystemExit(2) from None


def _run(state: _State, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine, mapping fhirbridge errors to one line and an exit code."""
    try:
        return asyncio.run(work())
    except FhirBridgeError as exc:
        if state.verbose:
            traceback.print_exc()
        code = next((c for kind, c in EXIT_CODES if isinstance(exc, kind)), 1)
        click.echo(f"fhirbridge: error: {exc}", err=True)
        raise SystemExit(code) from None
    except KeyboardInterrupt:
        click.echo("fhirbridge: interrupted", err=True)
        raise SystemExit(130) from None


def _instant(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    parsed = parse_instant(value)
    if parsed is None:
        raise click.BadParameter(f"{value!r} is not a FHIR date or instant", param_hint=option)
    return parsed


def _clock(now: str | None) -> Clock:
    at = _instant(now, "--now")
    return FixedClock(at) if at is not None else SystemClock()


class _Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, stage: str, stats: Any) -> None:
        if self.enabled:
            click.echo(
                f"\r{stage}: read {stats.read}, processed {stats.processed}, "
                f"transitions {stats.transitions}, planned writes {stats.planned}   ",
                err=True,
                nl=False,
            )

    def done(self) -> None:
        if self.enabled:
            click.echo("", err=True)


@click.group(
    context_settings={"auto_envvar_prefix": "FHIRBRIDGE", "help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="fhirbridge")
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="FHIRBRIDGE_CONFIG",
    help="The YAML configuration file [env: FHIRBRIDGE_CONFIG].",
)
@click.option("--verbose", "-v", is_flag=True, help="Debug logs and tracebacks.")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: bool) -> None:
    """fhirbridge: care coordination for transitions of care, inside the EHR."""
    configure(verbose=verbose)
    ctx.obj = _State(config_path, verbose)


@main.command()
@click.pass_obj
def check(state: _State) -> None:
    """Connect to the configured server and report what the engine needs from it."""
    from fhirbridge.fhir import client_from_config
    from fhirbridge.fhir.capabilities import assess

    config = state.config()

    async def work() -> bool:
        async with client_from_config(config.fhir) as client:
            statement = await client.capabilities()
            smart: dict[str, Any] | None = None
            try:
                smart = await client.get(".well-known/smart-configuration")
            except FhirError:
                smart = None
            rows = assess(
                statement,
                watched=config.engine.watch,
                smart_configuration=smart,
                smart_required=config.fhir.auth.type == "smart",
            )
        click.echo(f"server: {config.fhir.base_url}")
        width = max(len(r.name) for r in rows)
        ok_all = True
        for row in rows:
            mark = "yes" if row.ok else ("MISSING" if row.required else "no")
            need = "required" if row.required else "optional"
            click.echo(f"  {row.name:<{width}}  {mark:<7}  {need:<8}  {row.detail}")
            ok_all &= row.ok or not row.required
        return ok_all

    if not _run(state, work):
        click.echo("fhirbridge: error: the server lacks something the engine requires", err=True)
        raise SystemExit(1)


@main.command()
@click.option("--once", is_flag=True, help="Drain what is new, then exit.")
@click.option("--since", help="Start a first run from this instant (default: now - max_event_age).")
@click.option("--now", help="Evaluate timers and ages as of this instant (tests, replays).")
@click.pass_obj
def run(state: _State, once: bool, since: str | None, now: str | None) -> None:
    """Poll the server, detect transitions and write the coordination work back."""
    from fhirbridge.engine import Bridge

    config = state.config()
    progress = _Progress()
    start = _instant(since, "--since")

    async def work() -> None:
        async with Bridge.from_config(config, clock=_clock(now), progress=progress) as bridge:
            if once:
                stats = await bridge.run_once(since=start)
                progress.done()
                click.echo(stats.summary())
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await bridge.run_forever(stop)

    _run(state, work)


@main.command()
@click.option("--since", help="Look at changes since this instant (default: now - max_event_age).")
@click.option("--now", help="Evaluate timers and ages as of this instant.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per transition.")
@click.pass_obj
def plan(state: _State, since: str | None, now: str | None, as_json: bool) -> None:
    """Show the transitions and the exact writes a run would make; write nothing."""
    from fhirbridge.engine import Bridge
    from fhirbridge.store import MemoryStore

    config = state.config()
    start = _instant(since, "--since")

    async def work() -> list[Any]:
        async with Bridge.from_config(config, clock=_clock(now), store=MemoryStore()) as bridge:
            return await bridge.plan(since=start)

    plans = _run(state, work)
    if as_json:
        for item in plans:
            click.echo(json.dumps(item.as_dict(), default=str))
        return
    if not plans:
        click.echo("no transitions found")
    for item in plans:
        t = item.transition
        click.echo(f"{t.occurred_at:%Y-%m-%d %H:%M} {t.kind.value:<20} {t.focus}  ({item.note})")
        for action in item.actions:
            row = action.as_dict()
            if row["action"] == "create-task":
                click.echo(
                    f"    create Task {row['code']:<22} due {row['due']}  {row['priority']:<7}"
                    f" owner {row['owner'] or '-'} ({row['owner_source']})"
                )
            elif row["action"] == "record-risk":
                click.echo(f"    record {row['score']} score {row['total']} ({row['tier']})")
            elif row["action"] == "create-referral":
                click.echo(
                    f"    create ServiceRequest referral {row['need']} due {row['due']}"
                    f" (for {row['reason']})"
                )
            else:
                click.echo(f"    {row['action']} ({row.get('reason') or row.get('outcome', '')})")


@main.command()
@click.pass_obj
def replay(state: _State) -> None:
    """Retry dead letters (after fixing their cause), then process and write them."""
    from fhirbridge.engine import Bridge

    config = state.config()

    async def work() -> str:
        async with Bridge.from_config(config) as bridge:
            count = bridge.replay()
            stats = await bridge.process()
            written = await bridge.drain()
            return (
                f"replayed {count}; processed {stats.processed}, "
                f"tasks created {written.created}, dead again {written.dead}"
            )

    click.echo(_run(state, work))


@main.command()
@click.option("--since", help="Only what changed since this instant (default: everything).")
@click.option("--now", help="Evaluate ages as of this instant.")
@click.pass_obj
def backfill(state: _State, since: str | None, now: str | None) -> None:
    """Journal the server's history by bulk $export, then process and write it."""
    from fhirbridge.engine import Bridge

    config = state.config()
    start = _instant(since, "--since")
    on_tty = sys.stderr.isatty()

    def show(message: str) -> None:
        if on_tty:
            click.echo(f"\rexport: {message}   ", err=True, nl=False)

    async def work() -> str:
        async with Bridge.from_config(config, clock=_clock(now)) as bridge:
            stats = await bridge.backfill(since=start, progress=show)
            return stats.summary()

    summary = _run(state, work)
    if on_tty:
        click.echo("", err=True)
    click.echo(summary)


@main.command()
@click.option("--now", help="Count overdue work as of this instant.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def report(state: _State, now: str | None, as_json: bool) -> None:
    """Follow-up and referral completion, and overdue work per owner, from the server."""
    from fhirbridge.engine import Bridge
    from fhirbridge.store import MemoryStore

    config = state.config()

    async def work() -> Any:
        async with Bridge.from_config(config, clock=_clock(now), store=MemoryStore()) as bridge:
            return await bridge.report()

    figures = _run(state, work).as_dict()
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    click.echo(f"as of {figures['as_of']}")
    header = ("task code", "total", "done", "on time", "open", "late")
    click.echo("  {:<22} {:>5} {:>5} {:>7} {:>5} {:>5}  completion".format(*header))
    for code, row in figures["by_code"].items():
        rate = "-" if row["completion"] is None else f"{row['completion']:.0%}"
        click.echo(
            f"  {code:<22} {row['total']:>5} {row['completed']:>5} {row['completed_on_time']:>7}"
            f" {row['open']:>5} {row['overdue']:>5}  {rate}"
        )
    click.echo("overdue work per owner:")
    for owner, count in figures["overdue_by_owner"].items() or [("(none)", 0)]:
        click.echo(f"  {owner:<40} {count}")


@main.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the demo server's data here (default: a temporary folder).",
)
@click.pass_obj
def demo(state: _State, workdir: Path | None) -> None:
    """Start an embedded FHIR server, discharge a few patients, run the engine, show the work."""
    from fhirbridge.demo import run_demo

    _run(state, lambda: run_demo(workdir, echo=click.echo))


@main.command()
@click.option(
    "--no-poll", is_flag=True, help="Only receive notifications; never poll the server on a timer."
)
@click.pass_obj
def serve(state: _State, no_poll: bool) -> None:
    """Receive FHIR notifications (Subscriptions, Da Vinci) on receiver.host:port and act on
    them; also poll every receiver.poll_interval seconds. SIGTERM drains and exits 0."""
    from fhirbridge.receiver import serve as serve_receiver

    config = state.config()
    _run(state, lambda: serve_receiver(config, poll=not no_poll))


@main.command()
@click.option("--list", "list_only", is_flag=True, help="Only list the engine's Subscriptions.")
@click.option("--delete", is_flag=True, help="Delete every Subscription the engine made.")
@click.pass_obj
def subscribe(state: _State, list_only: bool, delete: bool) -> None:
    """Create or update the configured Subscriptions on the server (run it while `serve` is
    listening: topic subscriptions become active after a handshake with the receiver)."""
    from fhirbridge.engine import Bridge
    from fhirbridge.subscriptions import (
        delete_subscriptions,
        ensure_subscriptions,
        list_subscriptions,
    )

    config = state.config()

    async def work() -> list[dict[str, Any]]:
        async with Bridge.from_config(config) as bridge:
            if delete:
                return await delete_subscriptions(bridge)
            if list_only:
                return await list_subscriptions(bridge)
            return await ensure_subscriptions(bridge, config)

    rows = _run(state, work)
    if not rows:
        click.echo("no subscriptions")
    for row in rows:
        error = f"  ({row['error']})" if row.get("error") else ""
        click.echo(
            f"Subscription/{row['id']}  {row['status'] or '-':<9} {row['style']:<5} "
            f"{row['payload']:<13} {row['criteria']}  {row['action']}{error}".rstrip()
        )
    if not (list_only or delete) and any(r["status"] != "active" for r in rows):
        click.echo("fhirbridge: error: a Subscription did not become active", err=True)
        raise SystemExit(3)


@main.command("hl7")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Also receive ADT over MLLP on HOST:PORT until SIGINT/SIGTERM.",
)
@click.option(
    "--visit-system",
    metavar="URI",
    help="System of the PV1-19 visit numbers on the server (default: mappings/hl7v2.yaml).",
)
@click.option(
    "--mrn-system",
    metavar="URI",
    help="System of the PID-3 MRNs on the server (default: mappings/hl7v2.yaml).",
)
@click.pass_obj
def hl7_command(
    state: _State,
    files: tuple[Path, ...],
    listen: str | None,
    visit_system: str | None,
    mrn_system: str | None,
) -> None:
    """Ingest HL7 v2 ADT messages (files of messages, batches or MLLP captures; and/or MLLP)
    as new versions of the server's Encounters and Patients, then detect and write the work.
    Messages naming nothing on the server go to the dead letters with the reason."""
    from fhirbridge.engine import Bridge
    from fhirbridge.sources.hl7v2 import MllpListener, ingest_hl7

    if not files and not listen:
        raise click.UsageError("give FILEs, --listen HOST:PORT, or both")
    host, port = "", 0
    if listen:
        host, _, port_text = listen.rpartition(":")
        if not host or not port_text.isdigit():
            raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
        port = int(port_text)
    config = state.config()

    async def work() -> None:
        async with Bridge.from_config(config) as bridge:
            for path in files:
                stats = await ingest_hl7(
                    bridge, path.read_bytes(), visit_system=visit_system, mrn_system=mrn_system
                )
                click.echo(f"{path}: {stats.summary()}")
            if not listen:
                return
            listener = MllpListener(bridge, visit_system=visit_system, mrn_system=mrn_system)
            bound = await listener.start(host, port)
            click.echo(f"listening for HL7 v2 over MLLP on {host}:{bound}", err=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await listener.aclose()
            click.echo(f"mllp: {listener.stats.summary()}")

    _run(state, work)


if __name__ == "__main__":  # pragma: no cover
    main()
