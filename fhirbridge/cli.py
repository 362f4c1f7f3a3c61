"""The ``fhirbridge`` command line: a thin layer over :class:`fhirbridge.Bridge`.

Every option also reads a ``FHIRBRIDGE_*`` environment variable (``--help`` names it), and
the global options (``--config``, ``--verbose``, ``--log-format``) go before or after the
command. Errors print one line and exit non-zero; ``--verbose`` adds the traceback and
debug logs.

Exit codes:

== ===================================================================================
0  done
1  another failure (``check``: the server lacks something the engine requires)
2  configuration, rules or command-line usage
3  the FHIR server (unreachable, refused, failed)
4  the journal (cannot open it, or another process holds it)
5  the command left new dead letters (``run --once``, ``replay``, ``hl7``, ``backfill``);
   ``--allow-dead-letters`` makes that 0; ``fhirbridge dead-letters`` shows them
== ===================================================================================

Heavy modules (the engine, fhir.resources, the receiver) are imported by the command that
needs them, so ``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fhirbridge import __version__
from fhirbridge.clock import Clock, FixedClock, SystemClock
from fhirbridge.errors import ConfigError, FhirBridgeError, FhirError, StoreError
from fhirbridge.values import parse_instant

if TYPE_CHECKING:
    from fhirbridge.config import Config
    from fhirbridge.store import Store

T = TypeVar("T")

EXIT_CODES: tuple[tuple[type[FhirBridgeError], int], ...] = (
    (ConfigError, 2),
    (FhirError, 3),
    (StoreError, 4),
)
#: Exit code of a command that left new dead letters.
EXIT_DEAD_LETTERS = 5
CONFIG_NAME = "fhirbridge.yaml"

#: ``click.option`` that shows its environment variable in ``--help``.
option = functools.partial(click.option, show_envvar=True)


def user_config_dir() -> Path:
    """The per-user configuration folder (``$XDG_CONFIG_HOME/fhirbridge`` on Linux)."""
    return Path(click.get_app_dir("fhirbridge"))


def find_config(explicit: Path | None) -> Path | None:
    """The configuration file: ``--config`` / ``$FHIRBRIDGE_CONFIG``, else
    ``./fhirbridge.yaml``, else ``fhirbridge.yaml`` in the user configuration folder."""
    if explicit is not None:
        return explicit
    for candidate in (Path.cwd() / CONFIG_NAME, user_config_dir() / CONFIG_NAME):
        if candidate.is_file():
            return candidate
    return None


class _State:
    """What the global options said, wherever they were given."""

    def __init__(self) -> None:
        self.config_path: Path | None = None
        self.verbose = False
        self.log_format: str | None = None
        self.long_running = False
        self._config: Config | None = None

    def config(self) -> Config:
        """The configuration (found as :func:`find_config` says), or exit 2 with one line."""
        if self._config is not None:
            return self._config
        from fhirbridge.config import load_config

        path = find_config(self.config_path)
        if path is None:
            click.echo(
                "fhirbridge: error: no configuration: pass --config FILE, set "
                f"FHIRBRIDGE_CONFIG, or put {CONFIG_NAME} in this folder or in "
                f"{user_config_dir()} (`fhirbridge init` writes a starter)",
                err=True,
            )
            raise SystemExit(2)
        try:
            self._config = load_config(path)
        except ConfigError as exc:
            if self.verbose:
                traceback.print_exc()
            click.echo(f"fhirbridge: error: {exc}", err=True)
            raise SystemExit(2) from None
        self.configure_logs(self._config)
        return self._config

    def configure_logs(self, config: Config | None = None) -> None:
        """Logs as the options and ``logging.*`` say: long-running commands log at
        ``logging.level``, one-shot commands warnings and up; ``--verbose``: debug."""
        from fhirbridge.logs import configure

        settings = config.logging if config is not None else None
        fmt = self.log_format or (settings.format if settings is not None else "auto")
        json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
        level = "warning"
        if self.long_running and settings is not None:
            level = settings.level
        configure(verbose=self.verbose, json_output=json_output, level=level)


def _state() -> _State:
    ctx = click.get_current_context()
    state = ctx.find_object(_State)
    if state is None:  # a command invoked on its own (tests)
        state = ctx.ensure_object(_State)
    return state


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value is False:
            return  # not given here: keep what the other position said
        state = ctx.find_object(_State) or ctx.ensure_object(_State)
        setattr(state, name, value)

    return callback


def global_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command takes, before or after the command name."""
    decorators = (
        click.option(
            "--config",
            "-c",
            type=click.Path(path_type=Path, dir_okay=False),
            envvar="FHIRBRIDGE_CONFIG",
            show_envvar=True,
            expose_value=False,
            callback=_remember("config_path"),
            help=f"The YAML configuration file (default: ./{CONFIG_NAME}, then the user "
            "configuration folder).",
        ),
        click.option(
            "--verbose",
            "-v",
            is_flag=True,
            expose_value=False,
            callback=_remember("verbose"),
            help="Debug logs and tracebacks.",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["auto", "json", "console"]),
            envvar="FHIRBRIDGE_LOGGING__FORMAT",
            show_envvar=True,
            expose_value=False,
            callback=_remember("log_format"),
            help="Log events as JSON lines or for a console (default: logging.format, auto: "
            "console on a terminal, JSON otherwise).",
        ),
    )
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


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


@contextlib.contextmanager
def sole_writer(config: Config) -> Iterator[None]:
    """Hold the journal's writer lock for the configured server while the block runs: a
    second ``run``, ``serve``, ``hl7``, ``backfill`` or ``replay`` on the same journal is
    refused with one line naming the holder, and exit 4."""
    from fhirbridge.store import open_store

    try:
        store = open_store(config.store.url)
    except FhirBridgeError as exc:
        click.echo(f"fhirbridge: error: {exc}", err=True)
        raise SystemExit(4) from None
    with contextlib.ExitStack() as held:
        held.callback(store.close)
        try:
            held.enter_context(store.acquire_writer(config.fhir.name))
        except StoreError as exc:
            click.echo(f"fhirbridge: error: {exc}", err=True)
            raise SystemExit(4) from None
        yield


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


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` journal URL (None for another store or in memory)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        return None
    path = rest[1:] if rest.startswith("/") else rest
    if not path or path == ":memory:":
        return None
    return Path(path)


def _journal_guard(config: Config, new_journal: bool) -> None:
    """Refuse to start a new, empty journal by accident (a typo in ``store.url`` would
    otherwise reprocess ``engine.max_event_age`` of history)."""
    path = sqlite_path(config.store.url)
    if path is None or path.exists() or new_journal:
        if path is not None and new_journal and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        return
    click.echo(
        f"fhirbridge: error: store.url: the journal {path} does not exist; check the path, "
        "or pass --new-journal to start a new one (`fhirbridge init` also creates it)",
        err=True,
    )
    raise SystemExit(4)


def new_journal_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--new-journal``: allow a journal file that does not exist yet to be created."""
    return option(
        "--new-journal",
        is_flag=True,
        help="Create the SQLite journal if its file does not exist (else that is an error).",
    )(command)


def dead_letters_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--allow-dead-letters``: exit 0 even when the command left new dead letters."""
    return option(
        "--allow-dead-letters",
        is_flag=True,
        help=f"Exit 0 even when new dead letters were left (else exit {EXIT_DEAD_LETTERS}).",
    )(command)


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: print what the command did as JSON on stdout."""
    return option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(command)


def _last_dead_letter(store: Store) -> int:
    letters = store.dead_letters(include_replayed=True)
    return max((letter.id for letter in letters), default=0)


def _new_dead_letters(store: Store, since_id: int) -> int:
    return sum(1 for letter in store.dead_letters() if letter.id > since_id)


async def _counting_dead_letters(bridge: Any, work: Awaitable[T]) -> tuple[T, int]:
    """What ``work`` returns, and how many new dead letters it left in the bridge's journal."""
    before = _last_dead_letter(bridge.store)
    result = await work
    return result, _new_dead_letters(bridge.store, before)


def _finish(stats: Any, dead: int, *, as_json: bool, allow_dead_letters: bool) -> None:
    """Print a pass's figures (one line, or JSON), then exit 5 on new dead letters."""
    if as_json:
        _echo_json({**stats.counts(), "new_dead_letters": dead})
    else:
        click.echo(stats.summary())
    _fail_on_dead_letters(dead, allow_dead_letters)


def _fail_on_dead_letters(count: int, allow: bool) -> None:
    if count and not allow:
        click.echo(
            f"fhirbridge: {count} new dead letter(s): see `fhirbridge dead-letters`; fix the "
            "cause and `fhirbridge replay`",
            err=True,
        )
        raise SystemExit(EXIT_DEAD_LETTERS)


def as_data(value: Any) -> Any:
    """A stats value as JSON-ready data (dataclasses by their scalar fields)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for item in dataclasses.fields(value):
            inner = getattr(value, item.name)
            if item.name in ("plans", "keep_plans") or (
                item.name == "written" and isinstance(inner, list)  # references, not figures
            ):
                continue
            out[item.name] = as_data(inner)
        return out
    if isinstance(value, dict):
        return {str(k): as_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [as_data(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(as_data(value), default=str))


class _Progress:
    """Progress of long work: one line rewritten on a terminal; otherwise a line every
    ``every`` seconds (a service log, a CI job)."""

    def __init__(self, every: float = 15.0) -> None:
        self.enabled = sys.stderr.isatty()
        self.every = every
        self._next = time.monotonic() + every

    def __call__(self, stage: str, stats: Any) -> None:
        line = (
            f"{stage}: read {stats.read}, processed {stats.processed}, "
            f"transitions {stats.transitions}, planned writes {stats.planned}"
        )
        if self.enabled:
            click.echo(f"\r{line}   ", err=True, nl=False)
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every
            click.echo(f"progress: {line}", err=True)

    def message(self, text: str) -> None:
        """Progress given as text (the bulk export)."""
        if self.enabled:
            click.echo(f"\r{text}   ", err=True, nl=False)
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every
            click.echo(f"progress: {text}", err=True)

    def done(self) -> None:
        if self.enabled:
            click.echo("", err=True)


def _stop_on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


@click.group(
    context_settings={"auto_envvar_prefix": "FHIRBRIDGE", "help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="fhirbridge")
@global_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """fhirbridge: care coordination for transitions of care, inside the EHR."""
    ctx.ensure_object(_State)


def _timezone_warning(config: Config) -> str | None:
    """The risk scores' warning when ``engine.timezone`` is unset (None when it is set)."""
    from fhirbridge.risk.zone import timezone_warning
    from fhirbridge.rules import load_rules

    if config.engine.timezone:
        return None
    try:
        fallback = load_rules(config.rules or None).defaults.timezone
    except ConfigError:
        fallback = None
    return timezone_warning(config.engine.timezone, fallback=fallback)


@main.command()
@global_options
@json_option
@option(
    "--no-probe",
    is_flag=True,
    help="Trust the CapabilityStatement alone; write nothing on the server.",
)
def check(as_json: bool, no_probe: bool) -> None:
    """Preflight: reach the server, search each watched type with the configured credentials,
    probe what the CapabilityStatement leaves open (a tagged test write, deleted afterwards),
    read the journal's schema version and show the time zone. Exits 1 when a required row
    fails."""
    state = _state()
    from fhirbridge.preflight import preflight

    config = state.config()
    report = _run(state, lambda: preflight(config, probe=not no_probe))
    if as_json:
        _echo_json(report.as_dict())
    else:
        click.echo(f"server: {config.fhir.base_url}")
        if config.engine.risk and (zone_line := _timezone_warning(config)):
            click.echo(f"warning: {zone_line}")
        width = max(len(r.name) for r in report.rows)
        for row in report.rows:
            mark = "yes" if row.ok else ("MISSING" if row.required else "no")
            need = "required" if row.required else "optional"
            line = f"  {row.name:<{width}}  {mark:<7}  {need:<8}  {row.source:<8}  {row.detail}"
            click.echo(line.rstrip())
        if report.profile is not None:
            click.echo(f"writes: {report.profile.write_path}")
    if not report.ok:
        names = ", ".join(row.name for row in report.failed)
        click.echo(f"fhirbridge: error: the preflight failed: {names}", err=True)
        raise SystemExit(1)


@main.command()
@option("--once", is_flag=True, help="Drain what is new, then exit.")
@option("--since", help="Start a first run from this instant (default: now - max_event_age).")
@option("--now", help="Evaluate timers and ages as of this instant (tests, replays).")
@option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve /healthz, /readyz and Prometheus /metrics on this port while running.",
)
@option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address for --metrics-port (0.0.0.0 for every interface).",
)
@option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Run this many worker processes sharing the journal (PostgreSQL only), restarted "
    "if they crash; with --metrics-port, worker i serves on that port + i.",
)
@json_option
@new_journal_option
@dead_letters_option
@global_options
def run(
    once: bool,
    since: str | None,
    now: str | None,
    metrics_port: int | None,
    metrics_host: str,
    workers: int,
    as_json: bool,
    new_journal: bool,
    allow_dead_letters: bool,
) -> None:
    """Poll the server, detect transitions and write the coordination work back.

    Without --once: a pass every engine.poll_interval seconds, one `run_pass` log event
    each, until SIGTERM or SIGINT, which let the pass in progress finish (up to
    engine.stop_grace seconds) and exit 0.

    On a PostgreSQL journal every `run` is a worker: several (--workers N, or separate
    processes on several hosts) share the patient lanes, one polls. On SQLite one `run`
    writes the journal and a second is refused."""
    state = _state()
    state.long_running = not once
    config = state.config()
    _journal_guard(config, new_journal)
    start = _instant(since, "--since")
    shared = shares_journal(config.store.url)
    if workers > 1:
        if not shared:
            click.echo(
                "fhirbridge: error: --workers needs a journal workers can share "
                "(store.url: postgresql://...); a SQLite journal has one writer",
                err=True,
            )
            raise SystemExit(2)
        if once:
            click.echo("fhirbridge: error: --workers runs a service; leave out --once", err=True)
            raise SystemExit(2)
        _supervise(state, workers, since=since, now=now, port=metrics_port, host=metrics_host)
        return
    from fhirbridge.engine import Bridge

    if once:
        progress = _Progress()

        async def once_work() -> tuple[Any, int]:
            async with Bridge.from_config(
                config, clock=_clock(now), progress=progress, worker=shared
            ) as bridge:
                return await _counting_dead_letters(bridge, bridge.run_once(since=start))

        with journal_writer(config, shared):
            stats, dead = _run(state, once_work)
        progress.done()
        _finish(stats, dead, as_json=as_json, allow_dead_letters=allow_dead_letters)
        return

    async def work() -> None:
        from fhirbridge.service import PollingService

        async with Bridge.from_config(config, clock=_clock(now), worker=shared) as bridge:
            service = PollingService(bridge)
            _stop_on_signals(service.stop)
            where = f", operations on http://{metrics_host}:{metrics_port}" if metrics_port else ""
            role = f" as worker {bridge.leases.worker}" if bridge.leases is not None else ""
            click.echo(
                f"fhirbridge run: polling {config.fhir.base_url} every "
                f"{service.interval:g} s{role}{where}; SIGTERM stops",
                err=True,
            )
            if since is not None:
                await bridge.run_once(since=start)
            if metrics_port is not None:
                await service.serve(metrics_host, metrics_port)
            else:
                await service.run()

    with journal_writer(config, shared):
        _run(state, work)


def shares_journal(url: str) -> bool:
    """Whether ``store.url`` is a journal several workers share (PostgreSQL)."""
    return url.partition("://")[0].lower() in ("postgresql", "postgres")


@contextlib.contextmanager
def journal_writer(config: Config, shared: bool) -> Iterator[None]:
    """The journal's one writer lock (:func:`sole_writer`), or nothing for a worker on a
    shared journal: workers share it through leases instead. A worker still opens the
    journal first, so that a journal of an older schema is migrated once (under the
    store's migration lock) before any pass."""
    if not shared:
        with sole_writer(config):
            yield
        return
    _migrated(config)
    yield


def _migrated(config: Config) -> None:
    """Open the journal once, migrating it if it is older (workers starting together take
    turns under the store's migration lock), or exit 4 with one line."""
    from fhirbridge.store import open_store

    try:
        open_store(config.store.url).close()
    except FhirBridgeError as exc:
        click.echo(f"fhirbridge: error: {exc}", err=True)
        raise SystemExit(4) from None


def _supervise(
    state: _State, count: int, *, since: str | None, now: str | None, port: int | None, host: str
) -> None:
    """``run --workers N``: N ``run`` processes under a
    :class:`~fhirbridge.supervisor.Supervisor`."""
    from fhirbridge.supervisor import Supervisor

    config = state.config()
    _migrated(config)  # once, here, before the workers start
    base = [sys.executable, "-m", "fhirbridge"]
    if state.config_path is not None:
        base += ["--config", str(state.config_path)]
    if state.verbose:
        base.append("--verbose")
    if state.log_format is not None:
        base += ["--log-format", state.log_format]
    base.append("run")
    for flag, value in (("--since", since), ("--now", now)):
        if value is not None:
            base += [flag, value]

    def command(index: int) -> list[str]:
        if port is None:
            return base
        return [*base, "--metrics-port", str(port + index if port else 0), "--metrics-host", host]

    click.echo(
        f"fhirbridge run: {count} workers on the shared journal, polling "
        f"{config.fhir.base_url}; SIGTERM stops them all",
        err=True,
    )
    state.configure_logs()
    code = Supervisor(command, count, grace=config.engine.stop_grace + 10).run()
    raise SystemExit(code)


@main.command()
@option("--since", help="Look at changes since this instant (default: now - max_event_age).")
@option("--now", help="Evaluate timers and ages as of this instant.")
@option("--json", "as_json", is_flag=True, help="One JSON object per transition.")
@global_options
def plan(since: str | None, now: str | None, as_json: bool) -> None:
    """Show the transitions and the exact writes a run would make; write nothing."""
    state = _state()
    config = state.config()
    start = _instant(since, "--since")
    from fhirbridge.engine import Bridge
    from fhirbridge.store import MemoryStore

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
                unknown = len((row.get("details") or {}).get("unrecognised") or ())
                note = f", {unknown} Condition code(s) not recognised" if unknown else ""
                click.echo(f"    record {row['score']} score {row['total']} ({row['tier']}{note})")
            elif row["action"] == "create-referral":
                click.echo(
                    f"    create ServiceRequest referral {row['need']} due {row['due']}"
                    f" (for {row['reason']})"
                )
            else:
                click.echo(f"    {row['action']} ({row.get('reason') or row.get('outcome', '')})")


@main.command()
@json_option
@dead_letters_option
@global_options
def replay(as_json: bool, allow_dead_letters: bool) -> None:
    """Retry dead letters (after fixing their cause), then process and write them."""
    state = _state()
    config = state.config()
    _journal_guard(config, False)
    shared = shares_journal(config.store.url)
    from fhirbridge.engine import Bridge

    async def work() -> tuple[dict[str, int], int]:
        async with Bridge.from_config(config, worker=shared) as bridge:
            before = _last_dead_letter(bridge.store)
            count = bridge.replay()
            stats = await bridge.process()
            written = await bridge.drain()
            figures = {
                "replayed": count,
                "processed": stats.processed,
                "tasks_created": written.created,
                "dead_again": written.dead,
            }
            return figures, _new_dead_letters(bridge.store, before)

    with journal_writer(config, shared):
        figures, dead = _run(state, work)
    if as_json:
        _echo_json({**figures, "new_dead_letters": dead})
    else:
        click.echo(
            f"replayed {figures['replayed']}; processed {figures['processed']}, "
            f"tasks created {figures['tasks_created']}, dead again {figures['dead_again']}"
        )
    _fail_on_dead_letters(dead, allow_dead_letters)


@main.command()
@option("--since", help="Only what changed since this instant (default: everything).")
@option("--now", help="Evaluate ages as of this instant.")
@json_option
@new_journal_option
@dead_letters_option
@global_options
def backfill(
    since: str | None, now: str | None, as_json: bool, new_journal: bool, allow_dead_letters: bool
) -> None:
    """Journal the server's history by bulk $export, then process and write it."""
    state = _state()
    config = state.config()
    _journal_guard(config, new_journal)
    start = _instant(since, "--since")
    progress = _Progress()
    shared = shares_journal(config.store.url)
    from fhirbridge.engine import Bridge

    async def work() -> tuple[Any, int]:
        async with Bridge.from_config(config, clock=_clock(now), worker=shared) as bridge:
            exported = bridge.backfill(since=start, progress=progress.message)
            return await _counting_dead_letters(bridge, exported)

    with journal_writer(config, shared):
        stats, dead = _run(state, work)
    progress.done()
    _finish(stats, dead, as_json=as_json, allow_dead_letters=allow_dead_letters)


@main.command("dead-letters")
@option("--since", help="Only dead letters kept since this instant.")
@option("--all", "include_replayed", is_flag=True, help="Include those already replayed.")
@option("--source", help="Only this source (process, poll, notification, bulk, hl7v2, write).")
@json_option
@global_options
def dead_letters(
    since: str | None, include_replayed: bool, source: str | None, as_json: bool
) -> None:
    """What failed and why: inputs and writes kept in the journal's dead letters, newest
    last. Fix the cause, then `fhirbridge replay`."""
    state = _state()
    config = state.config()
    _journal_guard(config, False)
    start = _instant(since, "--since")
    from fhirbridge.store import open_store

    try:
        store = open_store(config.store.url)
    except FhirBridgeError as exc:
        click.echo(f"fhirbridge: error: {exc}", err=True)
        raise SystemExit(4) from None
    try:
        letters = store.dead_letters(include_replayed=include_replayed)
    finally:
        store.close()
    letters = [
        letter
        for letter in letters
        if (start is None or letter.created_at >= start)
        and (source is None or letter.source == source)
    ]
    if as_json:
        for letter in letters:
            click.echo(
                json.dumps(
                    {
                        "id": letter.id,
                        "when": letter.created_at.isoformat(),
                        "source": letter.source,
                        "reference": letter.reference,
                        "reason": letter.reason,
                        "replayed": letter.replayed,
                        "payload_bytes": len(letter.payload),
                    }
                )
            )
        return
    if not letters:
        click.echo("no dead letters")
        return
    for letter in letters:
        mark = " (replayed)" if letter.replayed else ""
        click.echo(
            f"#{letter.id}  {letter.created_at:%Y-%m-%d %H:%M:%S}  {letter.source:<12} "
            f"{letter.reference}{mark}"
        )
        click.echo(f"    {letter.reason}")
    click.echo(f"{len(letters)} dead letter(s); `fhirbridge replay` retries them", err=True)


@main.command()
@option(
    "--base-url",
    default="http://127.0.0.1:8090/fhir",
    show_default=True,
    help="The FHIR server's base URL.",
)
@option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    default=".",
    show_default=True,
    help="Where to write fhirbridge.yaml, the receiver secret and the journal.",
)
@option("--force", is_flag=True, help="Overwrite an existing fhirbridge.yaml.")
@global_options
def init(base_url: str, folder: Path, force: bool) -> None:
    """Write a commented starter configuration, a receiver secret and an empty journal."""
    from fhirbridge.starter import write_starter

    state = _state()
    state.configure_logs()
    try:
        written = write_starter(folder, base_url=base_url, force=force)
    except FhirBridgeError as exc:
        click.echo(f"fhirbridge: error: {exc}", err=True)
        raise SystemExit(2) from None
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(
        f"next: edit {folder / CONFIG_NAME} (fhir.base_url, fhir.auth), then "
        "`fhirbridge check` and `fhirbridge plan`"
    )


@main.command()
@option("--now", help="Count overdue work as of this instant.")
@option("--from", "start", help="First day of the period (default: 90 days before --to).")
@option("--to", "end", help="Last day of the period (default: the day of --now).")
@option("--owner", help="Only Tasks owned by this reference (Practitioner/1).")
@option("--organization", help="Only Tasks this organization owns or whose stay it provided.")
@option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the report with its charts to this HTML file.",
)
@option(
    "--csv",
    "csv_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write summary.csv and one CSV table per measure into this folder.",
)
@option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@global_options
def report(
    now: str | None,
    start: str | None,
    end: str | None,
    owner: str | None,
    organization: str | None,
    html_path: Path | None,
    csv_dir: Path | None,
    as_json: bool,
) -> None:
    """Coordination measures (TCM, readmissions, referrals, no-shows, overdue work) read
    from the server, for a period and optionally one owner or organization."""
    state = _state()
    from fhirbridge.engine import Bridge
    from fhirbridge.report import Scope
    from fhirbridge.report.fetch import default_period, read_report
    from fhirbridge.report.html import render_html
    from fhirbridge.report.tables import write_csv
    from fhirbridge.store import MemoryStore

    config = state.config()
    clock = _clock(now)
    first, last = _instant(start, "--from"), _instant(end, "--to")

    async def work() -> Any:
        async with Bridge.from_config(config, clock=clock, store=MemoryStore()) as bridge:
            assert bridge.client is not None  # from_config always makes one
            as_of = bridge.calendar.local_date(clock.now())
            period = default_period(
                as_of,
                bridge.calendar.local_date(first) if first else None,
                bridge.calendar.local_date(last) if last else None,
            )
            if period.end < period.start:
                raise click.BadParameter("--from is after --to", param_hint="--from")
            return await read_report(
                bridge.client,
                period=period,
                as_of=as_of,
                calendar=bridge.calendar,
                codes=bridge.rules.codes,
                scope=Scope(owner=owner, organization=organization),
            )

    result = _run(state, work)
    if html_path is not None:
        html_path.write_text(
            render_html(result, generated=clock.now(), server=config.fhir.base_url), "utf-8"
        )
        click.echo(f"report written to {html_path}", err=True)
    if csv_dir is not None:
        written = write_csv(result, csv_dir)
        click.echo(f"{len(written)} CSV tables written to {csv_dir}", err=True)
    figures = result.as_dict()
    if as_json:
        click.echo(json.dumps(figures, indent=2))
        return
    click.echo(
        f"as of {figures['as_of']}, period {figures['period']['from']} to {figures['period']['to']}"
    )
    for measure in figures["measures"]:
        value = measure["value"]
        shown = (
            "-"
            if value is None
            else f"{value:g} days"
            if measure["unit"] == "days"
            else f"{value:.0%}"
        )
        click.echo(
            f"  {measure['title']:<62} {shown:>9}  "
            f"({measure['numerator']}/{measure['denominator']})"
        )
    header = ("task code", "total", "done", "on time", "open", "late")
    click.echo("  {:<22} {:>5} {:>5} {:>7} {:>5} {:>5}  completion".format(*header))
    for code, row in figures["by_code"].items():
        rate = "-" if row["completion"] is None else f"{row['completion']:.0%}"
        click.echo(
            f"  {code:<22} {row['total']:>5} {row['completed']:>5} {row['completed_on_time']:>7}"
            f" {row['open']:>5} {row['overdue']:>5}  {rate}"
        )
    click.echo("overdue work per owner:")
    for owner_ref, count in figures["overdue_by_owner"].items() or [("(none)", 0)]:
        click.echo(f"  {owner_ref:<40} {count}")


@main.command()
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the demo server's data here (default: a temporary folder).",
)
@global_options
def demo(workdir: Path | None) -> None:
    """Start an embedded FHIR server, discharge a few patients, run the engine, show the work."""
    from fhirbridge.demo import run_demo

    state = _state()
    state.configure_logs()
    _run(state, lambda: run_demo(workdir, echo=click.echo))


@main.command()
@option(
    "--no-poll", is_flag=True, help="Only receive notifications; never poll the server on a timer."
)
@new_journal_option
@global_options
def serve(no_poll: bool, new_journal: bool) -> None:
    """Receive FHIR notifications (Subscriptions, Da Vinci) on receiver.host:port and act on
    them; also poll every receiver.poll_interval seconds. SIGTERM drains and exits 0."""
    state = _state()
    state.long_running = True
    config = state.config()
    _journal_guard(config, new_journal)
    from fhirbridge.receiver import serve as serve_receiver

    receiver = config.receiver
    scheme = "https" if receiver.tls_certfile is not None else "http"
    click.echo(
        f"fhirbridge serve: receiving on {scheme}://{receiver.host}:{receiver.port}/notify "
        f"(health on /healthz, metrics on /metrics), server {config.fhir.base_url}"
        + ("" if no_poll else f", polling every {receiver.poll_interval:g} s")
        + "; SIGTERM stops",
        err=True,
    )
    shared = shares_journal(config.store.url)
    with journal_writer(config, shared):
        _run(state, lambda: serve_receiver(config, poll=not no_poll, worker=shared))


@main.command()
@option("--list", "list_only", is_flag=True, help="Only list the engine's Subscriptions.")
@option("--delete", is_flag=True, help="Delete every Subscription the engine made.")
@json_option
@global_options
def subscribe(list_only: bool, delete: bool, as_json: bool) -> None:
    """Create or update the configured Subscriptions on the server (run it while `serve` is
    listening: topic subscriptions become active after a handshake with the receiver)."""
    state = _state()
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
    if as_json:
        for row in rows:
            _echo_json(row)
    elif not rows:
        click.echo("no subscriptions")
    for row in rows if not as_json else []:
        error = f"  ({row['error']})" if row.get("error") else ""
        error += f"  ({row['note']})" if row.get("note") else ""
        click.echo(
            f"Subscription/{row['id']}  {row['status'] or '-':<9} {row['style']:<5} "
            f"{row['payload']:<13} {row['criteria']}  {row['action']}{error}".rstrip()
        )
    if not (list_only or delete) and any(r["status"] != "active" for r in rows):
        click.echo("fhirbridge: error: a Subscription did not become active", err=True)
        raise SystemExit(3)


@main.command("hl7")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@option(
    "--listen",
    metavar="HOST:PORT",
    help="Also receive ADT over MLLP on HOST:PORT until SIGINT/SIGTERM.",
)
@option(
    "--visit-system",
    metavar="URI",
    help="System of the PV1-19 visit numbers on the server (default: hl7.visit_system, "
    "then mappings/hl7v2.yaml).",
)
@option(
    "--mrn-system",
    metavar="URI",
    help="System of the PID-3 MRNs on the server (default: hl7.mrn_system, then "
    "mappings/hl7v2.yaml).",
)
@json_option
@new_journal_option
@dead_letters_option
@global_options
def hl7_command(
    files: tuple[Path, ...],
    listen: str | None,
    visit_system: str | None,
    mrn_system: str | None,
    as_json: bool,
    new_journal: bool,
    allow_dead_letters: bool,
) -> None:
    """Ingest HL7 v2 ADT messages (files of messages, batches or MLLP captures; and/or MLLP)
    as new versions of the server's Encounters and Patients, then detect and write the work.
    Messages naming nothing on the server go to the dead letters with the reason."""
    if not files and not listen:
        raise click.UsageError("give FILEs, --listen HOST:PORT, or both")
    host, port = "", 0
    if listen:
        host, _, port_text = listen.rpartition(":")
        if not host or not port_text.isdigit() or int(port_text) > 65535:
            raise click.BadParameter(
                f"{listen!r} is not HOST:PORT (0-65535)", param_hint="--listen"
            )
        port = int(port_text)
    state = _state()
    state.long_running = bool(listen)
    config = state.config()
    _journal_guard(config, new_journal)
    visit_system = visit_system or config.hl7.visit_system
    mrn_system = mrn_system or config.hl7.mrn_system
    shared = shares_journal(config.store.url)
    from fhirbridge.engine import Bridge
    from fhirbridge.sources.hl7v2 import MllpListener, ingest_hl7

    async def work() -> int:
        async with Bridge.from_config(config, worker=shared) as bridge:
            before = _last_dead_letter(bridge.store)
            for path in files:
                stats = await ingest_hl7(
                    bridge, path.read_bytes(), visit_system=visit_system, mrn_system=mrn_system
                )
                if as_json:
                    _echo_json({"file": str(path), **as_data(stats)})
                else:
                    click.echo(f"{path}: {stats.summary()}")
            if listen:
                listener = MllpListener.from_config(
                    bridge, config.hl7, visit_system=visit_system, mrn_system=mrn_system
                )
                if shared:  # a worker: its lanes' versions journalled by others wait for it
                    listener.idle_pass = config.engine.poll_interval
                bound = await listener.start(host, port)
                click.echo(f"listening for HL7 v2 over MLLP on {host}:{bound}", err=True)
                stop = asyncio.Event()
                _stop_on_signals(stop.set)
                await stop.wait()
                await listener.aclose()
                if as_json:
                    _echo_json({"listener": as_data(listener.stats)})
                else:
                    click.echo(f"mllp: {listener.stats.summary()}")
            return _new_dead_letters(bridge.store, before)

    with journal_writer(config, shared):
        dead = _run(state, work)
    if not listen:  # a listener is a service: its dead letters are watched by metrics
        _fail_on_dead_letters(dead, allow_dead_letters)


if __name__ == "__main__":  # pragma: no cover
    main()
