"""The sekmet server process: its settings, start, readiness and stop."""

from __future__ import annotations

import copy
import secrets
import socket
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx
import yaml

from fhirbridge.testing.sekmet._command import clean_env, sekmet_command
from fhirbridge.testing.sekmet._encounters import EncounterWorkflows
from fhirbridge.testing.sekmet._errors import SekmetStartError
from fhirbridge.testing.sekmet._fhir import JSON
from fhirbridge.testing.sekmet._orders import OrderWorkflows
from fhirbridge.testing.sekmet._workflows import WorkflowVia

_READY_PATH = "/metadata"  # answered without credentials whatever server_auth says


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> JSON:
    """Merge ``extra`` into a copy of ``base``; nested mappings merge, anything else replaces."""
    out: JSON = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _harness_credentials(auth: JSON) -> tuple[JSON, dict[str, str]]:
    """Pick (or add) credentials the harness can use for its own REST calls.

    Returns the possibly extended ``server_auth`` section and a description of the credentials:
    ``{"type": "none"}``, ``{"type": "bearer", "token": ...}``,
    ``{"type": "basic", "username": ..., "password": ...}`` or
    ``{"type": "smart", "client_id": ..., "client_secret": ..., "scope": ...}``.
    When the configured schemes offer nothing usable (no static token, no user, only
    key-based SMART clients), a random credential of an accepted scheme is added.
    """
    auth = copy.deepcopy(auth)
    types = list(auth.get("types") or ["none"])
    if "none" in types:
        return auth, {"type": "none"}
    tokens = list(auth.get("tokens") or [])
    users = dict(auth.get("users") or {})
    clients = list(auth.get("smart_clients") or [])
    if "bearer" in types and tokens:
        return auth, {"type": "bearer", "token": str(tokens[0])}
    if "basic" in types and users:
        user, password = next(iter(users.items()))
        return auth, {"type": "basic", "username": str(user), "password": str(password)}
    if "smart" in types:
        for client in clients:
            if client.get("client_secret"):
                return auth, {
                    "type": "smart",
                    "client_id": str(client["client_id"]),
                    "client_secret": str(client["client_secret"]),
                    "scope": str(client.get("scopes") or "system/*.*"),
                }
    secret = secrets.token_urlsafe(18)
    if "bearer" in types:
        auth["tokens"] = [*tokens, secret]
        return auth, {"type": "bearer", "token": secret}
    if "basic" in types:
        users["sekmet-harness"] = secret
        auth["users"] = users
        return auth, {"type": "basic", "username": "sekmet-harness", "password": secret}
    if "smart" in types:
        auth["smart_clients"] = [
            *clients,
            {"client_id": "sekmet-harness", "client_secret": secret, "scopes": "system/*.*"},
        ]
        return auth, {
            "type": "smart",
            "client_id": "sekmet-harness",
            "client_secret": secret,
            "scope": "system/*.*",
        }
    return auth, {"type": "none"}


class SekmetServer(EncounterWorkflows, OrderWorkflows):
    """A running ``sekmet serve`` process in a folder of its own, and its hospital workflows.

    Create one with :meth:`start`; stop it with :meth:`stop` or by leaving a ``with`` block.
    Attributes: :attr:`workdir`, :attr:`settings_path`, :attr:`settings` (what was written),
    :attr:`base_url` (``http://127.0.0.1:PORT/fhir``), :attr:`root_url`, :attr:`port`,
    :attr:`log_path` (the server's stdout and stderr), :attr:`startup_seconds`.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        settings_path: Path,
        settings: JSON,
        log_path: Path,
        process: subprocess.Popen[bytes],
        log_file: IO[bytes],
        credentials: Mapping[str, str],
        workflow_via: WorkflowVia,
        startup_seconds: float,
    ) -> None:
        """Wrap an already started process; use :meth:`start` instead of calling this."""
        self.workdir = workdir
        self.settings_path = settings_path
        self.settings = settings
        self.log_path = log_path
        self.port = int(settings["port"])
        self.base_url = str(settings["base_url"]).rstrip("/")
        self.root_url = self.base_url.removesuffix("/fhir")
        self.workflow_via: WorkflowVia = workflow_via
        self.startup_seconds = startup_seconds
        self._process = process
        self._log_file = log_file
        self._credentials = dict(credentials)
        self._token: tuple[str, float] | None = None
        self._http = httpx.Client(timeout=60.0)
        self._facility: JSON | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        auth: Mapping[str, Any] | None = None,
        simulator: bool = False,
        extra_settings: Mapping[str, Any] | None = None,
        timeout: float = 60.0,
        workflow_via: WorkflowVia = "http",
    ) -> SekmetServer:
        """Write ``settings.yaml`` into ``workdir``, run ``sekmet serve`` and wait until it answers.

        ``auth`` is sekmet's ``server_auth`` section (``types``, ``users``, ``tokens``,
        ``smart_clients``, ``token_lifetime``, ``enforce_scopes``); ``None`` leaves the server
        open.  ``simulator`` sets ``simulator.enabled`` (sekmet's default is on: it then works
        lab/imaging orders, Appointments, MedicationRequests and Claims that clients POST).
        ``extra_settings`` is deep-merged last (e.g. ``{"simulator": {"delay_seconds": 0.2}}``
        or ``{"validation": {"inbound": "off"}}``); giving ``port`` there without ``base_url``
        keeps ``base_url`` consistent with it.  The port is otherwise a free loopback port and
        the database lives in ``workdir/data``.

        Readiness is ``GET {base_url}/metadata`` answering 200 (sekmet serves it without
        credentials).  If the port was taken in the meantime the start is retried on a new
        port; any other failure raises :class:`SekmetStartError` with the tail of the log.
        """
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        last_error: SekmetStartError | None = None
        for _attempt in range(3):
            try:
                return cls._start_once(
                    workdir,
                    auth=auth,
                    simulator=simulator,
                    extra_settings=extra_settings or {},
                    timeout=timeout,
                    workflow_via=workflow_via,
                )
            except SekmetStartError as exc:
                last_error = exc
                if "address already in use" not in str(exc).lower():
                    raise
        assert last_error is not None
        raise last_error

    @classmethod
    def _start_once(
        cls,
        workdir: Path,
        *,
        auth: Mapping[str, Any] | None,
        simulator: bool,
        extra_settings: Mapping[str, Any],
        timeout: float,
        workflow_via: WorkflowVia,
    ) -> SekmetServer:
        port = free_port()
        settings: JSON = {
            "base_url": f"http://127.0.0.1:{port}/fhir",
            "host": "127.0.0.1",
            "port": port,
            "data_dir": str(workdir / "data"),
            "own_private_key_path": str(workdir / "keys" / "sekmet_private.pem"),
            "simulator": {"enabled": simulator},
        }
        if auth is not None:
            settings["server_auth"] = copy.deepcopy(dict(auth))
        settings = _deep_merge(settings, extra_settings)
        if "port" in extra_settings and "base_url" not in extra_settings:
            settings["base_url"] = f"http://127.0.0.1:{int(settings['port'])}/fhir"
        credentials: dict[str, str] = {"type": "none"}
        if isinstance(settings.get("server_auth"), Mapping):
            settings["server_auth"], credentials = _harness_credentials(settings["server_auth"])

        settings_path = workdir / "settings.yaml"
        settings_path.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
        log_path = workdir / "sekmet.log"
        log_file = log_path.open("ab")
        argv = [*sekmet_command(), "serve", "-c", str(settings_path)]
        started = time.monotonic()
        process = subprocess.Popen(  # noqa: S603 - argv is built here from fixed parts and paths
            argv,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
        server = cls(
            workdir=workdir,
            settings_path=settings_path,
            settings=settings,
            log_path=log_path,
            process=process,
            log_file=log_file,
            credentials=credentials,
            workflow_via=workflow_via,
            startup_seconds=0.0,
        )
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        server.startup_seconds = time.monotonic() - started
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}{_READY_PATH}"
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise SekmetStartError(
                    f"sekmet serve exited with code {code} before answering {url}; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                response = self._http.get(url, timeout=2.0)
            except httpx.HTTPError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            time.sleep(0.1)
        raise SekmetStartError(
            f"sekmet serve did not answer {url} within {timeout:g}s ({last}); "
            f"log {self.log_path}:\n{_tail(self.log_path)}"
        )

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server, wait for it, kill it if it lingers; safe to call twice."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=timeout)
        self._http.close()
        if not self._log_file.closed:
            self._log_file.close()

    def __enter__(self) -> Self:
        """Use the server in a ``with`` block; it stops at the end."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    # ------------------------------------------------------------------ sharing

    def mark(self) -> str:
        """The current instant, as sekmet stamps ``meta.lastUpdated``: give it to
        :meth:`clear_since` to take back everything written after this call."""
        now = datetime.now(UTC)
        return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"

    def clear_since(self, mark: str) -> int:
        """Delete every resource created or changed since ``mark`` (from :meth:`mark`), so one
        server can serve many tests, each seeing none of the others' data; returns how many.

        Subscriptions go first, so no deletion is notified to a test's receiver that is
        gone. Resources that existed before ``mark`` and changed since are deleted too; the
        cached :meth:`facility` data is fetched again on next use.
        """
        changed = self.changed_since(mark)
        changed.sort(key=lambda key: key[0] != "Subscription")
        for resource_type, resource_id in changed:
            self.delete(resource_type, resource_id)
        self._facility = None
        return len(changed)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log."""
        return _tail(self.log_path, lines)
