"""``fhirbridge check``: a preflight that proves the deployment can work, not only that a
server publishes a CapabilityStatement.

In order, each step a row of the report:

1. the server answers ``/metadata`` (every connection error names the URL; a certificate
   failure is not retried and says how to trust a CA bundle);
2. what the CapabilityStatement declares (:func:`fhirbridge.fhir.capabilities.assess`);
3. an **authenticated** ``_count=1`` search per watched type: 401 or 403 fails the check,
   and a 403 names the SMART scopes the token lacks;
4. the :class:`~fhirbridge.fhir.probe.ServerProfile`: each need declared or probed, with a
   test write the engine owns (a tagged scratch ``Basic``, created, read and deleted);
5. the journal: reachable, and its schema version against this release's migrations (read
   only: ``check`` never creates or migrates a journal);
6. the time zone that business days are counted in.

The report is ok when no required row failed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from fhirbridge.config import Config
from fhirbridge.errors import AuthError, ConfigError, FhirError
from fhirbridge.fhir import RetryPolicy, SmartBackendAuth, client_from_config
from fhirbridge.fhir.auth import missing_scopes
from fhirbridge.fhir.capabilities import Capability, assess
from fhirbridge.fhir.client import FhirClient
from fhirbridge.fhir.probe import ServerProfile, discover
from fhirbridge.store._sql import Dialect, migrations

__all__ = ["COMMAND_SCOPES", "PreflightReport", "journal_row", "preflight", "timezone_row"]

log = structlog.get_logger(__name__)

#: The SMART system scopes each command needs (type -> SMART v2 letters).
COMMAND_SCOPES: dict[str, dict[str, str]] = {
    "run": {
        "Patient": "rs",
        "Encounter": "rs",
        "ServiceRequest": "rs",
        "Condition": "rs",
        "Observation": "crs",
        "CareTeam": "rs",
        "Task": "cruds",
        "CarePlan": "cruds",
        "Provenance": "crs",
        "RiskAssessment": "crus",
    },
    "subscribe": {"Subscription": "cruds"},
    "check": {"Basic": "cruds"},
}
#: Rows that the probed profile decides, superseding the declaration-only rows of assess().
_SUPERSEDED = ("conditional create (Task)", "versioned update (If-Match)", "transactions")


@dataclass(frozen=True, slots=True)
class PreflightReport:
    """Every row of one ``check``, and the profile it found (None when it could not probe)."""

    server: str
    rows: tuple[Capability, ...]
    profile: ServerProfile | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No required row failed."""
        return all(row.ok or not row.required for row in self.rows)

    @property
    def failed(self) -> list[Capability]:
        """The required rows that failed."""
        return [row for row in self.rows if row.required and not row.ok]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (``fhirbridge check --json``)."""
        return {
            "server": self.server,
            "ok": self.ok,
            "rows": [row.as_dict() for row in self.rows],
            "profile": self.profile.as_dict() if self.profile else None,
            **self.extra,
        }


def _granted(client: FhirClient) -> list[str] | None:
    auth = client.auth
    if isinstance(auth, SmartBackendAuth) and auth.granted_scope is not None:
        return auth.granted_scope.split()
    return None


async def _search_row(client: FhirClient, rtype: str) -> Capability:
    name = f"{rtype}: authenticated search (_count=1)"
    try:
        await client.request("GET", rtype, params={"_count": 1})
    except AuthError as exc:
        detail = str(exc)
        if exc.status == 403:
            granted = _granted(client)
            lacking = (
                missing_scopes(granted, {rtype: "rs"})
                if granted is not None
                else [f"system/{rtype}.rs"]
            )
            if lacking:
                detail = f"the token lacks {', '.join(lacking)}: {detail}"
        elif exc.status == 401:
            detail = f"no or wrong credentials (check fhir.auth): {detail}"
        return Capability(name, True, False, detail, "checked")
    except FhirError as exc:
        return Capability(name, True, False, str(exc), "checked")
    return Capability(name, True, True, "", "checked")


def _scopes_row(client: FhirClient, requested: list[str]) -> Capability | None:
    granted = _granted(client)
    if granted is None:
        return None
    lacking = {
        command: missing_scopes(granted, needs)
        for command, needs in COMMAND_SCOPES.items()
        if command != "check"
    }
    text = "; ".join(f"{cmd} lacks {', '.join(m)}" for cmd, m in lacking.items() if m)
    not_granted = sorted(set(requested) - set(granted))
    if not_granted:
        text = "; ".join(filter(None, [text, f"not granted: {', '.join(not_granted)}"]))
    return Capability("SMART scopes granted", False, not text, text or " ".join(granted), "checked")


def _sqlite_path(url: str) -> str:
    rest = url.partition("://")[2]
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") else rest


def _schema_version(rows: list[Any]) -> int:
    return int(rows[0][0] or 0) if rows else 0


def journal_row(url: str) -> Capability:
    """The journal at ``url``: reachable, and its schema version (read only)."""
    name = "journal"
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    dialect: Dialect = "postgres" if scheme in ("postgresql", "postgres") else "sqlite"
    latest = migrations(dialect)[-1].version
    if scheme == "memory":
        return Capability(name, False, True, "memory:// (nothing is kept)", "checked")
    try:
        if scheme == "sqlite":
            path = _sqlite_path(url)
            if path == ":memory:":
                return Capability(name, False, True, "SQLite in memory (nothing kept)", "checked")
            if not Path(path).is_file():
                detail = f"no SQLite journal at {path} yet: the first run creates it"
                return Capability(name, False, False, detail, "checked")
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
                version = _schema_version(
                    conn.execute("SELECT max(version) FROM schema_version").fetchall()
                )
            where = f"SQLite {path}"
        elif scheme in ("postgresql", "postgres"):
            import psycopg

            with psycopg.connect(url, connect_timeout=5) as pg:
                version = _schema_version(
                    pg.execute("SELECT max(version) FROM schema_version").fetchall()
                )
            where = "PostgreSQL"
        else:
            raise ConfigError(f"store.url: scheme {scheme!r} is not a journal")
    except ImportError:
        detail = "PostgreSQL needs pip install 'fhirbridge[postgres]'"
        return Capability(name, True, False, detail, "checked")
    except (sqlite3.Error, ConfigError) as exc:
        return Capability(name, True, False, f"cannot read the journal: {exc}", "checked")
    except Exception as exc:  # psycopg's errors: their message never holds the password
        return Capability(name, True, False, f"cannot reach the journal: {exc}", "checked")
    if version > latest:
        detail = f"{where}, schema {version}: newer than this release ({latest}); upgrade"
        return Capability(name, True, False, detail, "checked")
    pending = (
        f", {latest - version} migration(s) pending (applied on start)" if version < latest else ""
    )
    return Capability(name, True, True, f"{where}, schema {version}{pending}", "checked")


def timezone_row(config: Config) -> Capability:
    """The time zone business days and due dates are counted in."""
    name = "time zone"
    if config.engine.timezone:
        return Capability(name, False, True, f"engine.timezone {config.engine.timezone}", "checked")
    detail = (
        "engine.timezone is not set: days are counted in the rule pack's zone, else UTC; "
        "set engine.timezone to the facility's zone"
    )
    return Capability(name, False, True, detail, "checked")


async def preflight(
    config: Config, *, client: FhirClient | None = None, probe: bool = True
) -> PreflightReport:
    """Run every step of the preflight against ``config``'s server and journal.

    ``client`` defaults to one built from the configuration without retries (a preflight
    should answer in seconds); ``probe=False`` writes nothing on the server.
    """
    own = client is None
    if client is None:
        client = client_from_config(config.fhir, retry=RetryPolicy(attempts=1))
    rows: list[Capability] = []
    profile: ServerProfile | None = None
    try:
        try:
            statement = await client.capabilities()
        except FhirError as exc:
            rows.append(Capability("server answers /metadata", True, False, str(exc), "checked"))
            statement = None
        if statement is not None:
            rows.append(Capability("server answers /metadata", True, True, "", "checked"))
            smart: dict[str, Any] | None
            try:
                smart = await client.get(".well-known/smart-configuration")
            except FhirError:
                smart = None
            declared = assess(
                statement,
                watched=config.engine.watch,
                smart_configuration=smart,
                smart_required=config.fhir.auth.type == "smart",
            )
            for row in declared:
                if probe and row.name in _SUPERSEDED:
                    continue
                rows.append(row)
            searches = [await _search_row(client, rtype) for rtype in config.engine.watch]
            rows.extend(searches)
            scopes = _scopes_row(client, config.fhir.auth.scopes)
            if scopes is not None:
                rows.append(scopes)
            if all(row.ok for row in searches) or not probe:
                try:
                    profile = await discover(client, probe=probe)
                except FhirError as exc:
                    rows.append(Capability("capability probes", True, False, str(exc), "probed"))
                else:
                    rows.extend(profile.rows())
    finally:
        if own:
            await client.aclose()
    rows.append(journal_row(config.store.url))
    rows.append(timezone_row(config))
    report = PreflightReport(config.fhir.base_url, tuple(rows), profile)
    log.info("preflight_done", ok=report.ok, failed=[row.name for row in report.failed])
    return report
