"""Start a ``sekmet-fhir`` test FHIR R4 server on loopback and drive its hospital workflows.

``sekmet serve`` is a micro hospital information system: a FHIR R4 server with SQLite storage,
R4 rest-hook and topic-based (Backport IG) subscriptions, SMART Backend Services, bulk export and
a catalogue of hospital workflows (register, admit, transfer, discharge, orders...).  This module
starts one in a folder of its own and gives tests a small, typed handle on it::

    with SekmetServer.start(tmp_path) as server:
        patient_id = server.register_patient(family="Doe", given="Jane")
        encounter_id = server.admit(patient_id)
        server.discharge(encounter_id, disposition="snf")
        encounter = server.read("Encounter", encounter_id)

How the workflows are driven
    sekmet has no JSON API for its workflows, but its web console runs them over HTTP:
    ``POST {root}/ui/workflows/{key}`` (form fields = workflow arguments, ``_target``) answers an
    HTML fragment whose ``<pre>`` holds the workflow result as JSON.  That runs *inside the
    server process* (so the server's subscriptions and simulator see the writes) and takes a
    few milliseconds, against about 1.3 s for ``sekmet workflow run`` (a new Python process that
    opens the same SQLite file, delivers subscription notifications itself and never tells the
    server).  :meth:`SekmetServer.run_workflow` uses HTTP by default and the CLI on request.
    The console is not behind ``server_auth``: workflows need no credentials.

Where sekmet has no workflow (an emergency visit, a death, a referral, a non-inpatient
disposition, ED-to-inpatient conversion) the methods below write plain FHIR REST with the
harness's own credentials; each docstring says which mechanism it uses.

Only the standard library, httpx and PyYAML are used.  Facts about sekmet behind these choices
are in the project's notes on sekmet (``notes/sekmet.md``).
"""

from __future__ import annotations

import base64
import copy
import html
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

import httpx
import yaml

__all__ = [
    "DISCHARGE_DISPOSITION_SYSTEM",
    "ENCOUNTER_CLASS_SYSTEM",
    "SekmetError",
    "SekmetServer",
    "SekmetStartError",
    "SekmetWorkflowError",
    "free_port",
    "sekmet_command",
]

JSON = dict[str, Any]
"""A FHIR resource or workflow result as parsed JSON."""

WorkflowVia = Literal["http", "cli"]

ENCOUNTER_CLASS_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
"""System of ``Encounter.class`` codings that sekmet writes (IMP, AMB; EMER by this harness)."""

DISCHARGE_DISPOSITION_SYSTEM = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
"""System of ``Encounter.hospitalization.dischargeDisposition`` as sekmet's discharge writes it
(code only, no display): home, alt-home, other-hcf, hosp, long, aadvice, exp, psy, rehab, snf,
oth."""

VISIT_NUMBER_SYSTEM = "urn:oid:1.2.3.4.5.2"
"""Default ``identifiers.visit`` system of sekmet (Encounter.identifier)."""

_CLASS_DISPLAY = {
    "IMP": "inpatient encounter",
    "AMB": "ambulatory",
    "EMER": "emergency",
    "OBSENC": "observation encounter",
    "SS": "short stay",
    "ACUTE": "inpatient acute",
    "NONAC": "inpatient non-acute",
    "PRENC": "pre-admission",
    "HH": "home health",
    "VR": "virtual",
    "FLD": "field",
}
_SNOMED = "http://snomed.info/sct"
_READY_PATH = "/metadata"  # answered without credentials whatever server_auth says
_ENV_OVERRIDES = (
    "SEKMET_CONFIG",
    "SEKMET_BASE_URL",
    "SEKMET_DB",
    "SEKMET_PORT",
    "SEKMET_PUBLIC_URL",
)
_PRE_RE = re.compile(r"<pre>(.*?)</pre>", re.DOTALL)
_FAILED_RE = re.compile(r'<p class="bad"><b>Failed:</b>(.*?)</p>', re.DOTALL)
_TAG_RE = re.compile(r"<[^>]+>")


class SekmetError(RuntimeError):
    """The sekmet test server misbehaved or a request to it failed."""


class SekmetStartError(SekmetError):
    """The sekmet server did not become ready; the message ends with the tail of its log."""


class SekmetWorkflowError(SekmetError):
    """A sekmet workflow failed; the message carries sekmet's own reason."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def sekmet_command() -> list[str]:
    """The argv prefix that runs the ``sekmet`` CLI of this interpreter's environment.

    The ``sekmet`` script next to :data:`sys.executable` (a virtualenv's ``bin/``) comes first,
    then ``sekmet`` on ``PATH``, then ``python -m sekmet.cli``.
    """
    beside = Path(sys.executable).with_name("sekmet")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    on_path = shutil.which("sekmet")
    if on_path:
        return [on_path]
    return [sys.executable, "-m", "sekmet.cli"]


def _now() -> str:
    """A FHIR instant in UTC with milliseconds, like the ones sekmet writes."""
    dt = datetime.now(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


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


def _clean_env() -> dict[str, str]:
    """This process's environment minus the variables that override sekmet's settings file."""
    return {k: v for k, v in os.environ.items() if k not in _ENV_OVERRIDES}


def _ref(rtype: str, rid: str) -> JSON:
    return {"reference": f"{rtype}/{rid}"}


def _coding(system: str, code: str, display: str | None = None) -> JSON:
    coding: JSON = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _parse_workflow_html(key: str, status: int, text: str) -> JSON:
    """Turn the console's HTML answer to ``POST /ui/workflows/{key}`` into the result JSON."""
    if status != 200:
        raise SekmetWorkflowError(f"workflow {key}: HTTP {status}: {text[:500]}")
    failed = _FAILED_RE.search(text)
    if failed:
        reason = html.unescape(_TAG_RE.sub("", failed.group(1))).strip()
        raise SekmetWorkflowError(f"workflow {key} failed: {reason}")
    pre = _PRE_RE.search(text)
    if pre is None:
        raise SekmetWorkflowError(f"workflow {key}: no result in the answer: {text[:500]}")
    result = json.loads(html.unescape(pre.group(1)))
    if not isinstance(result, dict):
        raise SekmetWorkflowError(f"workflow {key}: result is not an object: {result!r:.200}")
    return result


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


class SekmetServer:
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
            env=_clean_env(),
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

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log."""
        return _tail(self.log_path, lines)

    # ------------------------------------------------------------------ REST

    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` header for the harness's credentials (empty when the server is open).

        Basic and static bearer credentials are used as configured; a SMART client with a
        ``client_secret`` gets a token from ``{root}/auth/token`` (client_secret_basic), renewed
        shortly before it expires.
        """
        kind = self._credentials.get("type", "none")
        if kind == "bearer":
            return {"Authorization": f"Bearer {self._credentials['token']}"}
        if kind == "basic":
            raw = f"{self._credentials['username']}:{self._credentials['password']}".encode()
            return {"Authorization": f"Basic {base64.b64encode(raw).decode()}"}
        if kind == "smart":
            return {"Authorization": f"Bearer {self._smart_token()}"}
        return {}

    def _smart_token(self) -> str:
        if self._token and self._token[1] > time.monotonic() + 10:
            return self._token[0]
        response = self._http.post(
            f"{self.root_url}/auth/token",
            data={"grant_type": "client_credentials", "scope": self._credentials["scope"]},
            auth=(self._credentials["client_id"], self._credentials["client_secret"]),
        )
        if response.status_code != 200:
            raise SekmetError(f"token request failed: HTTP {response.status_code} {response.text}")
        body = response.json()
        self._token = (str(body["access_token"]), time.monotonic() + float(body["expires_in"]))
        return self._token[0]

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one HTTP request to ``{base_url}/{path}`` (or an absolute URL) with credentials.

        Keyword arguments go to :meth:`httpx.Client.request`; extra ``headers`` are merged.
        The response is returned whatever its status.
        """
        url = (
            path
            if path.startswith(("http://", "https://"))
            else f"{self.base_url}/{path.lstrip('/')}"
        )
        headers = {
            "Accept": "application/fhir+json",
            **self.auth_headers(),
            **dict(kwargs.pop("headers", None) or {}),
        }
        return self._http.request(method, url, headers=headers, **kwargs)

    def _expect(self, response: httpx.Response, *codes: int) -> JSON:
        if response.status_code not in codes:
            raise SekmetError(
                f"{response.request.method} {response.request.url}: "
                f"HTTP {response.status_code}: {response.text[:800]}"
            )
        body = response.json()
        if not isinstance(body, dict):
            raise SekmetError(f"{response.request.url}: answer is not a JSON object")
        return body

    def read(self, resource_type: str, resource_id: str) -> JSON:
        """``GET [base]/{type}/{id}``; raises :class:`SekmetError` unless 200."""
        return self._expect(self.request("GET", f"{resource_type}/{resource_id}"), 200)

    def search(
        self,
        resource_type: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        *,
        max_pages: int = 50,
    ) -> list[JSON]:
        """Search and follow ``next`` links (sekmet pages by ``_offset``); matches only.

        Unknown search parameters make sekmet fail the search (the harness sends
        ``Prefer: handling=strict``) instead of silently ignoring them.
        """
        items = list(params.items()) if isinstance(params, Mapping) else list(params or [])
        response = self.request(
            "GET", resource_type, params=items, headers={"Prefer": "handling=strict"}
        )
        out: list[JSON] = []
        for _page in range(max_pages):
            bundle = self._expect(response, 200)
            out += [
                e["resource"]
                for e in bundle.get("entry", [])
                if e.get("search", {}).get("mode", "match") == "match"
            ]
            nxt = next(
                (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"),
                None,
            )
            if nxt is None:
                return out
            response = self.request("GET", nxt, headers={"Prefer": "handling=strict"})
        raise SekmetError(f"search {resource_type} has more than {max_pages} pages")

    def create(self, resource: Mapping[str, Any], *, if_none_exist: str | None = None) -> JSON:
        """``POST [base]/{type}`` (conditional with ``if_none_exist``); returns what was stored."""
        headers = {"Content-Type": "application/fhir+json"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        response = self.request(
            "POST", str(resource["resourceType"]), json=dict(resource), headers=headers
        )
        return self._expect(response, 200, 201)

    def update(self, resource: Mapping[str, Any], *, if_match: bool = True) -> JSON:
        """``PUT [base]/{type}/{id}``, with ``If-Match`` on ``meta.versionId`` unless told not to.

        sekmet answers a stale ``If-Match`` with 412, raised here as :class:`SekmetError`.
        """
        headers = {"Content-Type": "application/fhir+json"}
        version = (resource.get("meta") or {}).get("versionId")
        if if_match and version:
            headers["If-Match"] = f'W/"{version}"'
        response = self.request(
            "PUT",
            f"{resource['resourceType']}/{resource['id']}",
            json=dict(resource),
            headers=headers,
        )
        return self._expect(response, 200, 201)

    # ------------------------------------------------------------------ workflows

    def run_workflow(
        self,
        key: str,
        args: Mapping[str, object] | None = None,
        *,
        target: str = "local",
        via: WorkflowVia | None = None,
    ) -> JSON:
        """Run the sekmet workflow ``key`` (see ``sekmet workflow list``) and return its result.

        ``args`` are the workflow's parameters (``None`` values are left out, booleans become
        the console's checkbox or the CLI's true/false).  ``target`` is sekmet's: ``local``
        writes straight into the store (origin "internal": no inbound validation, the
        simulator does not react); ``self`` makes the server call its own REST API (origin
        "external": validated, simulator reacts; needs a bearer token or basic user when
        ``server_auth`` is on).  ``via`` picks the web console over HTTP (default, fast,
        in-process) or ``sekmet workflow run`` in :attr:`workdir` (slow; its subscription
        notifications are sent by the CLI process).  The result maps names such as
        ``patient`` or ``encounter`` to resources, plus ``_meta``.
        """
        via = via or self.workflow_via
        args = {k: v for k, v in (args or {}).items() if v is not None}
        if via == "cli":
            return self._run_workflow_cli(key, args, target)
        form: dict[str, str] = {"_target": target}
        for name, value in args.items():
            if isinstance(value, bool):
                if value:
                    form[name] = "on"
            else:
                form[name] = str(value)
        response = self._http.post(
            f"{self.root_url}/ui/workflows/{key}", data=form, headers={"HX-Request": "true"}
        )
        return _parse_workflow_html(key, response.status_code, response.text)

    def _run_workflow_cli(self, key: str, args: Mapping[str, object], target: str) -> JSON:
        argv = [
            *sekmet_command(),
            "workflow",
            "run",
            key,
            "--target",
            target,
            "--config",
            str(self.settings_path),
        ]
        for name, value in args.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            argv += ["--arg", f"{name}={text}"]
        done = subprocess.run(  # noqa: S603 - argv is built here from fixed parts and paths
            argv,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=300,
            env=_clean_env(),
            check=False,
        )
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
            raise SekmetWorkflowError(
                f"sekmet workflow run {key} exited {done.returncode}:\n{tail}"
            )
        result = json.loads(done.stdout)
        if not isinstance(result, dict):
            raise SekmetWorkflowError(f"workflow {key}: result is not an object")
        return result

    def facility(self) -> JSON:
        """sekmet's master data (workflow ``adt.facility``), fetched once and cached.

        Keys look like ``org:hospital``, ``location:bed-401-1``, ``practitioner:attending``,
        ``role:nurse``; values are the resources.
        """
        if self._facility is None:
            self._facility = self.run_workflow("adt.facility")
        return self._facility

    def register_patient(
        self,
        *,
        mrn: str | None = None,
        family: str | None = None,
        given: str | None = None,
        gender: str | None = None,
        birth_date: str | None = None,
        seed: int | None = None,
    ) -> str:
        """Register a patient (workflow ``adt.register_patient``, A04); returns the Patient id.

        Fields left out are made up by sekmet (Faker); the MRN goes into
        ``identifier`` with system ``urn:oid:1.2.3.4.5.1`` and the create is conditional on it,
        so registering an existing MRN returns the existing patient.
        """
        result = self.run_workflow(
            "adt.register_patient",
            {
                "mrn": mrn,
                "family": family,
                "given": given,
                "gender": gender,
                "birth_date": birth_date,
                "seed": seed,
            },
        )
        return str(result["patient"]["id"])

    def admit(
        self,
        patient_id: str,
        *,
        encounter_class: str = "IMP",
        bed: str = "bed-401-1",
        reason: str | None = None,
        planned: bool = False,
    ) -> str:
        """Start an encounter for the patient; returns the Encounter id.

        - ``IMP``: workflow ``adt.admit`` (A01): status ``in-progress`` (``planned`` when
          ``planned``), ``location`` = the bed, ``hospitalization.admitSource`` = ``emd``.
        - ``AMB``: workflow ``adt.outpatient_visit`` (location ``opd-1``; ``bed`` ignored).
        - ``EMER``: :meth:`ed_visit` (plain REST).
        - any other v3 ActCode (``OBSENC``, ``SS``...): ``adt.admit``, then a REST update of
          ``Encounter.class``.

        ``bed`` is a sekmet location key: bed-401-1, bed-401-2, bed-502-1, bed-icu-1 (any key
        of its facility works, e.g. ``icu``).  ``reason`` is a SNOMED code of sekmet's catalogue
        or free text.
        """
        code = encounter_class.upper()
        if code == "EMER":
            return self.ed_visit(patient_id, reason=reason)
        if code == "AMB":
            result = self.run_workflow(
                "adt.outpatient_visit", {"patient": patient_id, "reason": reason}
            )
            return str(result["encounter"]["id"])
        result = self.run_workflow(
            "adt.admit", {"patient": patient_id, "bed": bed, "reason": reason, "planned": planned}
        )
        encounter: JSON = result["encounter"]
        if code != "IMP":
            encounter["class"] = _coding(ENCOUNTER_CLASS_SYSTEM, code, _CLASS_DISPLAY.get(code))
            encounter = self.update(encounter)
        return str(encounter["id"])

    def ed_visit(
        self, patient_id: str, *, reason: str | None = None, status: str = "in-progress"
    ) -> str:
        """Create an emergency Encounter (class ``EMER``) by REST; returns its id.

        sekmet has no ED workflow.  The Encounter looks like sekmet's own: a visit-number
        identifier, ``statusHistory``, SNOMED type 4525004 (Emergency department patient
        visit), priority ``EM``, the attending practitioner, the hospital as
        ``serviceProvider``, ``period.start`` = now.  No location (sekmet has no ED location).
        """
        facility = self.facility()
        now = _now()
        encounter: JSON = {
            "resourceType": "Encounter",
            "identifier": [{"system": VISIT_NUMBER_SYSTEM, "value": f"ED{uuid.uuid4().hex[:12]}"}],
            "status": status,
            "statusHistory": [{"status": status, "period": {"start": now}}],
            "class": _coding(ENCOUNTER_CLASS_SYSTEM, "EMER", "emergency"),
            "type": [
                {"coding": [_coding(_SNOMED, "4525004", "Emergency department patient visit")]}
            ],
            "priority": {
                "coding": [
                    _coding(
                        "http://terminology.hl7.org/CodeSystem/v3-ActPriority", "EM", "emergency"
                    )
                ]
            },
            "subject": _ref("Patient", patient_id),
            "participant": [
                {
                    "type": [
                        {
                            "coding": [
                                _coding(
                                    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                    "ATND",
                                    "attender",
                                )
                            ]
                        }
                    ],
                    "period": {"start": now},
                    "individual": _ref("Practitioner", facility["practitioner:attending"]["id"]),
                }
            ],
            "period": {"start": now},
            "serviceProvider": _ref("Organization", facility["org:hospital"]["id"]),
        }
        if reason:
            encounter["reasonCode"] = [{"text": reason}]
        return str(self.create(encounter)["id"])

    def admit_from_ed(self, encounter_id: str, *, bed: str = "bed-401-1") -> JSON:
        """Turn an ED Encounter into an inpatient one in place (REST update); returns it.

        ``class`` becomes ``IMP``, ``classHistory`` records the ``EMER`` period, the bed is
        appended to ``location`` and ``hospitalization.admitSource`` is ``emd`` (R4's way to
        say "admitted from the ED" without a new Encounter).  sekmet has no such workflow.
        """
        encounter = self.read("Encounter", encounter_id)
        now = _now()
        start = (encounter.get("period") or {}).get("start", now)
        old_class = encounter.get("class") or _coding(ENCOUNTER_CLASS_SYSTEM, "EMER", "emergency")
        encounter["classHistory"] = [
            *encounter.get("classHistory", []),
            {"class": old_class, "period": {"start": start, "end": now}},
        ]
        encounter["class"] = _coding(ENCOUNTER_CLASS_SYSTEM, "IMP", "inpatient encounter")
        location = self.facility()[f"location:{bed}"]
        encounter["location"] = [
            *encounter.get("location", []),
            {
                "location": _ref("Location", location["id"]),
                "status": "active",
                "period": {"start": now},
            },
        ]
        hospitalization = encounter.setdefault("hospitalization", {})
        hospitalization["admitSource"] = {
            "coding": [
                _coding(
                    "http://terminology.hl7.org/CodeSystem/admit-source",
                    "emd",
                    "From accident/emergency department",
                )
            ]
        }
        return self.update(encounter)

    def start_encounter(self, encounter_id: str) -> JSON:
        """Planned → in-progress (workflow ``adt.start_encounter``); returns the Encounter."""
        result = self.run_workflow("adt.start_encounter", {"encounter": encounter_id})
        encounter: JSON = result["encounter"]
        return encounter

    def transfer(self, encounter_id: str, *, bed: str = "bed-502-1") -> JSON:
        """Move the patient to another bed (workflow ``adt.transfer``, A02); returns the Encounter.

        Active ``location`` entries become ``completed`` with ``period.end``; the new bed is
        appended as ``active``.  Only ``in-progress``, ``arrived`` and ``onleave`` encounters
        can be transferred.
        """
        result = self.run_workflow("adt.transfer", {"encounter": encounter_id, "bed": bed})
        encounter: JSON = result["encounter"]
        return encounter

    def discharge(self, encounter_id: str, disposition: str | None = "home") -> JSON:
        """Finish the encounter (workflow ``adt.discharge``, A03); returns the Encounter.

        sekmet sets ``status`` ``finished``, ``period.end``, closes locations, participants and
        ``statusHistory``, and, for class ``IMP`` only, writes
        ``hospitalization.dischargeDisposition`` = ``{system: DISCHARGE_DISPOSITION_SYSTEM,
        code: disposition}`` (no display; sekmet does not check the code).  For any other class
        the harness adds the same disposition with a REST update afterwards (so the Encounter
        ends with one more version).  ``disposition=None`` writes none for non-IMP classes.
        Finished, cancelled and entered-in-error encounters are refused.
        """
        result = self.run_workflow(
            "adt.discharge", {"encounter": encounter_id, "disposition": disposition}
        )
        encounter: JSON = result["encounter"]
        if disposition and (encounter.get("class") or {}).get("code") != "IMP":
            encounter.setdefault("hospitalization", {})["dischargeDisposition"] = {
                "coding": [_coding(DISCHARGE_DISPOSITION_SYSTEM, disposition)]
            }
            encounter = self.update(encounter)
        return encounter

    def cancel(self, encounter_id: str) -> JSON:
        """Cancel the encounter (workflow ``adt.cancel_encounter``, A11); returns it.

        sekmet sets ``status`` ``cancelled`` whatever the current status (even ``finished``)
        and appends to ``statusHistory``; locations and period are left as they were.
        """
        result = self.run_workflow("adt.cancel_encounter", {"encounter": encounter_id})
        encounter: JSON = result["encounter"]
        return encounter

    def death(
        self,
        patient_id: str,
        *,
        when: str | None = None,
        encounter_id: str | None = None,
        as_boolean: bool = False,
    ) -> JSON:
        """Record the patient's death (REST update of the Patient); returns the Patient.

        sekmet has no death workflow.  ``Patient.deceasedDateTime`` is set to ``when`` (default
        now), or ``deceasedBoolean`` true with ``as_boolean`` (sekmet's ``deceased`` search
        parameter only sees ``deceasedBoolean``).  With ``encounter_id`` that encounter is
        first discharged with disposition ``exp`` (expired) unless it is already closed.
        """
        if encounter_id is not None:
            status = self.read("Encounter", encounter_id).get("status")
            if status not in ("finished", "cancelled", "entered-in-error"):
                self.discharge(encounter_id, "exp")
        patient = self.read("Patient", patient_id)
        patient.pop("deceasedBoolean", None)
        patient.pop("deceasedDateTime", None)
        if as_boolean:
            patient["deceasedBoolean"] = True
        else:
            patient["deceasedDateTime"] = when or _now()
        return self.update(patient)

    def lab_order(
        self,
        patient_id: str,
        *,
        encounter_id: str | None = None,
        test: str = "58410-2",
        priority: str = "routine",
    ) -> tuple[str, str]:
        """Place a lab order (workflow ``orders.lab_order``): (ServiceRequest id, Task id).

        One transaction writes an active ``ServiceRequest`` (LOINC ``test``, category SNOMED
        108252007, performer the lab) and a ``requested`` fulfilment ``Task`` (``focus`` and
        ``basedOn`` the ServiceRequest, ``owner`` the lab).  Tests: 58410-2 CBC, 51990-0 BMP,
        2345-7, 4548-4, 2160-0.
        """
        result = self.run_workflow(
            "orders.lab_order",
            {"patient": patient_id, "encounter": encounter_id, "test": test, "priority": priority},
        )
        return str(result["service_request"]["id"]), str(result["task"]["id"])

    def accept_order(self, service_request_id: str) -> JSON:
        """The filler accepts (workflow ``orders.accept``): Task ``accepted``; returns the Task."""
        result = self.run_workflow("orders.accept", {"service_request": service_request_id})
        task: JSON = result["task"]
        return task

    def lab_result(self, service_request_id: str, *, status: str = "final") -> JSON:
        """Report results (workflow ``orders.lab_result``); returns the DiagnosticReport.

        Observations and a DiagnosticReport are written in one transaction; with a final
        status the Task becomes ``completed`` and the ServiceRequest ``completed``.
        """
        result = self.run_workflow(
            "orders.lab_result", {"service_request": service_request_id, "status": status}
        )
        report: JSON = result["diagnostic_report"]
        return report

    def cancel_order(self, service_request_id: str, *, reason: str = "Ordered in error") -> JSON:
        """Revoke an order (workflow ``orders.cancel``); returns the ServiceRequest.

        The ServiceRequest becomes ``revoked`` with a note, its Task ``cancelled`` with
        ``statusReason``.
        """
        result = self.run_workflow(
            "orders.cancel", {"service_request": service_request_id, "reason": reason}
        )
        service_request: JSON = result["service_request"]
        return service_request

    def referral(
        self,
        patient_id: str,
        *,
        encounter_id: str | None = None,
        code: Mapping[str, Any] | None = None,
        with_task: bool = False,
    ) -> str:
        """Create an outgoing referral ``ServiceRequest`` by REST; returns its id.

        sekmet has no referral workflow.  The ServiceRequest is ``active``/``order``, category
        SNOMED 3457005 (Patient referral), ``code`` a CodeableConcept (default SNOMED 306206005,
        Referral to service), requester the attending.  With ``with_task`` a ``requested``
        Task (``focus``/``basedOn`` the ServiceRequest, code ``fulfill``) is written too.
        """
        facility = self.facility()
        service_request: JSON = {
            "resourceType": "ServiceRequest",
            "identifier": [
                {"system": "urn:oid:1.2.3.4.5.3", "value": f"REF{uuid.uuid4().hex[:12]}"}
            ],
            "status": "active",
            "intent": "order",
            "category": [{"coding": [_coding(_SNOMED, "3457005", "Patient referral")]}],
            "code": dict(code)
            if code
            else {"coding": [_coding(_SNOMED, "306206005", "Referral to service")]},
            "subject": _ref("Patient", patient_id),
            "authoredOn": _now(),
            "requester": _ref("Practitioner", facility["practitioner:attending"]["id"]),
        }
        if encounter_id:
            service_request["encounter"] = _ref("Encounter", encounter_id)
        created = self.create(service_request)
        if with_task:
            self.create(
                {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "code": {
                        "coding": [_coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")]
                    },
                    "focus": _ref("ServiceRequest", created["id"]),
                    "basedOn": [_ref("ServiceRequest", created["id"])],
                    "for": _ref("Patient", patient_id),
                    "authoredOn": _now(),
                }
            )
        return str(created["id"])

    def encounters(self, patient_id: str) -> Iterator[JSON]:
        """Every Encounter of the patient (REST search ``Encounter?patient=``)."""
        yield from self.search("Encounter", {"patient": patient_id, "_count": "100"})
