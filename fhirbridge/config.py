"""Configuration: one YAML file, validated, with ``FHIRBRIDGE_*`` environment overrides.

Environment variables override the file, with ``__`` between levels, e.g.
``FHIRBRIDGE_FHIR__BASE_URL=https://ehr.example.org/fhir`` or
``FHIRBRIDGE_STORE__URL=postgresql://...``. Secrets may be given inline, from a file
(``*_file``) or from the environment; they are never logged or printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fhirbridge._yaml import Loader, did_you_mean, first_error, schema_keys, yaml_problem
from fhirbridge.errors import ConfigError

__all__ = [
    "AuthConfig",
    "Config",
    "ConsoleConfig",
    "EngineConfig",
    "FhirConfig",
    "Hl7Config",
    "LoggingConfig",
    "ReceiverConfig",
    "RetryConfig",
    "StoreConfig",
    "SubscriptionConfig",
    "load_config",
]

WATCHED_TYPES = (
    "Encounter",
    "ServiceRequest",
    "Task",
    "CarePlan",
    "Patient",
    # case management: coverage at discharge, no-shows, social needs (SDOH)
    "Coverage",
    "Appointment",
    "Condition",
    "Observation",
)
_LONGEST = timedelta(days=36525)  # 100 years: far enough back, still a date Python can hold
_YEAR = 365 * 86400.0  # seconds: the longest wait or period the engine accepts


def _http_url(value: str) -> str:
    """An http(s) URL with a host and, if given, a port in 0-65535."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 -- reading it is the check: urllib raises on a bad port
    except ValueError:
        raise ValueError(
            f"the port in {value!r} is not a number in 0-65535: give the server's real port"
        ) from None
    if not parts.hostname:
        raise ValueError(f"{value!r} names no host: give the full URL, such as https://ehr/fhir")
    return value


def _store_url(value: str) -> str:
    """A journal URL whose port, if given, is in 0-65535."""
    try:
        urlsplit(value).port  # noqa: B018 -- reading it is the check
    except ValueError:
        raise ValueError("the port in the store URL is not a number in 0-65535") from None
    return value


def _duration(value: timedelta) -> timedelta:
    """A positive duration of at most 100 years."""
    if not timedelta(0) < value <= _LONGEST:
        raise ValueError(
            f"{value} is out of range: give a duration between 1 second and 100 years "
            "(ISO 8601, such as P14D or PT12H)"
        )
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
Duration = Annotated[timedelta, AfterValidator(_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret(inline: SecretStr | None, path: Path | None, key: str) -> str | None:
    if inline is not None:
        return inline.get_secret_value()
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{key}_file: cannot read {path}: {exc.strerror}") from exc
    return None


class AuthConfig(_Section):
    """How to authenticate to the FHIR server (``fhir.auth``)."""

    type: Literal["none", "bearer", "basic", "smart"] = "none"
    token: SecretStr | None = None
    token_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    client_id: str | None = None
    private_key: SecretStr | None = None
    private_key_file: Path | None = None
    key_id: str | None = None
    algorithm: Literal["RS384", "ES384"] = "RS384"
    scopes: list[str] = Field(
        default_factory=lambda: [
            "system/Patient.rs",
            "system/Encounter.rs",
            "system/ServiceRequest.rs",
            "system/Condition.rs",
            "system/Observation.rs",
            "system/CareTeam.rs",
            "system/Task.cruds",
            "system/CarePlan.cruds",
            "system/Provenance.c",
            "system/RiskAssessment.cu",
            "system/Observation.cu",
            "system/Subscription.cruds",
            "system/Basic.cruds",
        ]
    )
    token_url: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> AuthConfig:
        needs: dict[str, list[tuple[str, bool]]] = {
            "bearer": [("token", self.token is not None or self.token_file is not None)],
            "basic": [
                ("username", bool(self.username)),
                ("password", self.password is not None or self.password_file is not None),
            ],
            "smart": [
                ("client_id", bool(self.client_id)),
                ("key_id", bool(self.key_id)),
                (
                    "private_key",
                    self.private_key is not None or self.private_key_file is not None,
                ),
            ],
        }
        missing = [name for name, ok in needs.get(self.type, []) if not ok]
        if missing:
            raise ValueError(f"auth type {self.type!r} needs {', '.join(missing)}")
        return self

    def resolved_token(self) -> str | None:
        """The bearer token, from the inline value or the file."""
        return _secret(self.token, self.token_file, "fhir.auth.token")

    def resolved_password(self) -> str | None:
        """The basic-auth password, from the inline value or the file."""
        return _secret(self.password, self.password_file, "fhir.auth.password")

    def resolved_private_key(self) -> str | None:
        """The PEM private key for SMART, from the inline value or the file."""
        return _secret(self.private_key, self.private_key_file, "fhir.auth.private_key")


class RetryConfig(_Section):
    """Retry bounds for FHIR requests (``fhir.retry``)."""

    attempts: int = Field(5, ge=1, le=20)
    initial: float = Field(0.5, ge=0, le=3600)
    max_backoff: float = Field(30.0, ge=0, le=86400)
    max_elapsed: float = Field(120.0, ge=0, le=_YEAR)


class FhirConfig(_Section):
    """The FHIR server the engine watches and writes to (``fhir``)."""

    base_url: HttpUrl
    name: str = "default"
    timeout: float = Field(30.0, gt=0, le=3600)
    verify_tls: bool | Path = Field(
        True, description="true, false, or the path of a CA bundle (PEM) to trust"
    )
    page_size: int = Field(100, ge=1, le=1000)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    max_requests_per_second: float | None = Field(
        None, gt=0, description="cap on requests per second to the server (unset: no cap)"
    )

    @model_validator(mode="after")
    def _ca_bundle(self) -> FhirConfig:
        if isinstance(self.verify_tls, Path) and not self.verify_tls.is_file():
            raise ValueError(f"verify_tls: no CA bundle file at {self.verify_tls}")
        return self


class StoreConfig(_Section):
    """Where the journal lives (``store``)."""

    url: Annotated[str, AfterValidator(_store_url)] = "sqlite:///fhirbridge.db"
    lease_seconds: float = Field(
        30.0, gt=0, le=3600, description="seconds a worker's lane and outbox leases run"
    )


class EngineConfig(_Section):
    """How the engine runs and plans (``engine``)."""

    poll_interval: float = Field(60.0, gt=0, le=_YEAR, description="seconds between polls")
    max_event_age: Duration = timedelta(days=14)
    overlap: Duration = timedelta(minutes=5)
    watch: list[str] = Field(default_factory=lambda: list(WATCHED_TYPES))
    timezone: str | None = None
    weekend: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None
    holidays: list[date] | None = None
    default_owner: str | None = None
    requester: str = "Device/fhirbridge"
    readmission_window_days: int = Field(30, ge=1, le=365)
    sweep_interval: float = Field(3600.0, gt=0, le=_YEAR)
    risk: bool = True
    concurrency: int = Field(
        8, ge=1, le=64, description="patient lanes evaluated and written at once"
    )
    heal_interval: float = Field(
        86400.0, gt=0, le=_YEAR, description="seconds between sweeps for duplicated resources"
    )
    stop_grace: float = Field(
        30.0, ge=0, description="seconds a stop waits for the pass in progress in `run`"
    )

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            if self.timezone is not None:
                ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        return self


class OncologyConfig(_Section):
    """The facility's oncology services for HOSPITAL's O item (``risk.oncology``)."""

    services: list[str] | None = Field(None, description='"system|code" or "code"')
    organizations: list[str] = Field(default_factory=list, description="Organization/id")
    locations: list[str] = Field(default_factory=list, description="Location/id")


class RiskConfig(_Section):
    """How the readmission risk scores read the facility's data (``risk``)."""

    oncology: OncologyConfig = Field(default_factory=OncologyConfig)


class SubscriptionConfig(_Section):
    """One Subscription the engine asks the server for (``subscriptions[]``)."""

    criteria: str | None = None
    topic: str | None = None
    filters: list[str] = Field(default_factory=list)
    payload: Literal["full-resource", "id-only", "empty"] = "full-resource"
    heartbeat: int | None = Field(None, ge=1, le=86400)
    fallback_criteria: str | None = None
    signing_secret: SecretStr | None = None
    signing_secret_file: Path | None = None

    def resolved_signing_secret(self) -> str | None:
        """The HMAC-SHA256 key the server signs deliveries with (``x-signature``), if any."""
        return _secret(
            self.signing_secret, self.signing_secret_file, "subscriptions[].signing_secret"
        )

    @model_validator(mode="after")
    def _one(self) -> SubscriptionConfig:
        if (self.criteria is None) == (self.topic is None):
            raise ValueError("give either criteria (R4) or topic (Backport), not both")
        if self.fallback_criteria is not None and self.topic is None:
            raise ValueError("fallback_criteria is for a topic entry (criteria needs none)")
        return self


class ReceiverConfig(_Section):
    """The notification receiver of ``fhirbridge serve`` (``receiver``)."""

    host: str = "127.0.0.1"
    port: int = Field(8089, ge=0, le=65535)
    public_url: HttpUrl | None = None
    secret: SecretStr | None = None
    secret_file: Path | None = None
    max_body: int = Field(5 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(64, ge=8, le=512)
    max_json_values: int = Field(200_000, ge=100)
    max_string_length: int = Field(1024 * 1024, ge=64)
    header_timeout: float = Field(10.0, gt=0, le=3600)
    max_header_bytes: int = Field(65536, ge=1024)
    body_timeout: float = Field(30.0, gt=0, le=3600)
    keep_alive_timeout: int = Field(5, ge=1, le=3600)
    max_connections: int = Field(1000, ge=1)
    max_subscriptions: int = Field(1000, ge=1)
    poll_interval: float = Field(300.0, gt=0, le=_YEAR)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    tls_client_ca: Path | None = None

    @model_validator(mode="after")
    def _tls(self) -> ReceiverConfig:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("give both tls_certfile and tls_keyfile, or neither")
        if self.tls_client_ca is not None and self.tls_certfile is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_certfile and tls_keyfile")
        return self

    def resolved_secret(self) -> str | None:
        """The shared secret senders must present."""
        return _secret(self.secret, self.secret_file, "receiver.secret")


class ConsoleConfig(_Section):
    """The operator console and coordination report pages served by ``serve`` (``console``)."""

    enabled: bool = True
    show_names: bool = False  # patient names beside references (PHI on the screen)


class LoggingConfig(_Section):
    """How events are logged (``logging``).

    ``format: auto`` renders for people on a terminal and one JSON object per line
    otherwise (a service under systemd or in a container). ``level`` applies to the
    long-running commands (``run``, ``serve``, ``hl7 --listen``); the one-shot commands
    log warnings and up unless ``--verbose``.
    """

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Hl7Config(_Section):
    """HL7 v2 feeds of ``fhirbridge hl7`` (``hl7``): how PV1-19 visit numbers and PID-3 MRNs
    are written on the FHIR server (unset: the defaults of ``mappings/hl7v2.yaml``), and the
    bounds of the MLLP listener."""

    visit_system: str | None = None
    mrn_system: str | None = None
    max_frame: int = Field(1024 * 1024, ge=1024, description="bytes in one MLLP frame")
    max_segments: int = Field(1000, ge=1)
    max_field: int = Field(65536, ge=16, description="characters in one field")
    idle_timeout: float = Field(300.0, gt=0, le=86400)
    max_connections: int = Field(100, ge=1)


class _YamlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Config(BaseSettings):
    """The whole configuration. Build it with :func:`load_config`."""

    model_config = SettingsConfigDict(
        env_prefix="FHIRBRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    fhir: FhirConfig
    store: StoreConfig = Field(default_factory=StoreConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    rules: list[Path] = Field(default_factory=list)
    receiver: ReceiverConfig = Field(default_factory=ReceiverConfig)
    hl7: Hl7Config = Field(default_factory=Hl7Config)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


def _config_keys() -> frozenset[str]:
    """Every key of the configuration, for "did you mean" on an unknown one."""
    return schema_keys(Config)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _with_rule_files(raw: dict[str, Any], source: str, folder: Path | None) -> dict[str, Any]:
    """``rules`` as the list of rule files to load: the shipped pack first, then the user's
    files (relative to the configuration's folder), unless ``rules.replace_shipped``.

    ``rules`` is a list of files, or ``{files: [...], replace_shipped: true|false}``.
    """
    rules = raw.get("rules")
    if rules is None:
        return raw
    replace = False
    files: Any = rules
    if isinstance(rules, Mapping):
        unknown = set(rules) - {"files", "replace_shipped"}
        if unknown:
            raise ConfigError(
                f"{source}: rules.{sorted(unknown)[0]}: unknown key "
                "(rules takes files and replace_shipped)"
            )
        files = rules.get("files") or []
        replace = rules.get("replace_shipped", False)
        if not isinstance(replace, bool):
            raise ConfigError(f"{source}: rules.replace_shipped: give true or false")
    if not isinstance(files, list) or not all(isinstance(f, str | Path) for f in files):
        raise ConfigError(f"{source}: rules: give a list of rule files (YAML paths)")
    if not files and replace:
        raise ConfigError(
            f"{source}: rules.replace_shipped: true needs at least one file in rules.files"
        )
    resolved = [Path(f) if Path(f).is_absolute() or folder is None else folder / f for f in files]
    if not replace:
        from fhirbridge._shipped import mappings_dir
        from fhirbridge.rules.loader import SHIPPED_PACK

        shipped = mappings_dir() / SHIPPED_PACK
        if not any(_same_file(p, shipped) for p in resolved):
            resolved.insert(0, shipped)
    return {**raw, "rules": [str(p) for p in resolved]}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def load_config(
    path: str | Path | None = None,
    *,
    data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read and validate the configuration.

    ``path`` is a YAML file (relative ``rules`` paths are resolved against its folder);
    ``data`` a dict instead of a file. Environment variables ``FHIRBRIDGE_*`` override both.
    Raises :class:`ConfigError` with one line naming the file, the key and the problem.
    """
    source = str(path) if path else "configuration"
    raw: Any = dict(data or {})
    if path is not None:
        file = Path(path)
        try:
            raw = yaml.load(file.read_text(), Loader=Loader) or {}  # noqa: S506 -- a safe loader
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read the configuration: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(yaml_problem(str(file), exc)) from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: the configuration must be a mapping of sections")
    odd = [key for key in raw if not isinstance(key, str)]
    if odd:
        sections = ", ".join(Config.model_fields)
        raise ConfigError(f"{source}: {odd[0]!r} is not a section name (sections: {sections})")
    raw = _with_rule_files(raw, source, Path(path).parent if path is not None else None)
    saved_env = None
    if environ is not None:
        saved_env = dict(os.environ)
        for key in [k for k in os.environ if k.startswith("FHIRBRIDGE_")]:
            del os.environ[key]
        os.environ.update({k: v for k, v in environ.items() if k.startswith("FHIRBRIDGE_")})
    try:
        return Config(**raw)
    except ValidationError as exc:
        first = first_error(exc)
        key = _dotted(tuple(first["loc"])) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            known = first.get("suggest") or _config_keys()
            message = "unknown key" + did_you_mean(str(first["loc"][-1]), known)
        elif first["type"] == "missing":
            message = "missing: this key is required"
        elif first["type"].startswith(("date_", "datetime_")):
            message += ": write dates as YYYY-MM-DD"
        elif first["type"].startswith("time_delta"):
            message += ": write durations as ISO 8601, such as P14D or PT12H"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {key}: {message}{more}") from None
    finally:
        if saved_env is not None:
            os.environ.clear()
            os.environ.update(saved_env)
