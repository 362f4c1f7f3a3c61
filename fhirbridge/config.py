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
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fhirbridge.errors import ConfigError

__all__ = [
    "AuthConfig",
    "Config",
    "EngineConfig",
    "FhirConfig",
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
    initial: float = Field(0.5, ge=0)
    max_backoff: float = Field(30.0, ge=0)
    max_elapsed: float = Field(120.0, ge=0)


class FhirConfig(_Section):
    """The FHIR server the engine watches and writes to (``fhir``)."""

    base_url: str = Field(pattern=r"^https?://")
    name: str = "default"
    timeout: float = Field(30.0, gt=0)
    verify_tls: bool = True
    page_size: int = Field(100, ge=1, le=1000)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)


class StoreConfig(_Section):
    """Where the journal lives (``store``)."""

    url: str = "sqlite:///fhirbridge.db"


class EngineConfig(_Section):
    """How the engine runs and plans (``engine``)."""

    poll_interval: float = Field(60.0, gt=0, description="seconds between polls in `run`")
    max_event_age: timedelta = timedelta(days=14)
    overlap: timedelta = timedelta(minutes=5)
    watch: list[str] = Field(default_factory=lambda: list(WATCHED_TYPES))
    timezone: str | None = None
    weekend: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = None
    holidays: list[date] | None = None
    default_owner: str | None = None
    requester: str = "Device/fhirbridge"
    readmission_window_days: int = Field(30, ge=1, le=365)
    sweep_interval: float = Field(3600.0, gt=0)
    risk: bool = True

    @model_validator(mode="after")
    def _check(self) -> EngineConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            if self.timezone is not None:
                ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        return self


class SubscriptionConfig(_Section):
    """One Subscription the engine asks the server for (``subscriptions[]``)."""

    criteria: str | None = None
    topic: str | None = None
    filters: list[str] = Field(default_factory=list)
    payload: Literal["full-resource", "id-only", "empty"] = "full-resource"
    heartbeat: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one(self) -> SubscriptionConfig:
        if (self.criteria is None) == (self.topic is None):
            raise ValueError("give either criteria (R4) or topic (Backport), not both")
        return self


class ReceiverConfig(_Section):
    """The notification receiver of ``fhirbridge serve`` (``receiver``)."""

    host: str = "127.0.0.1"
    port: int = Field(8089, ge=0, le=65535)
    public_url: str | None = None
    secret: SecretStr | None = None
    secret_file: Path | None = None
    max_body: int = Field(5 * 1024 * 1024, ge=1024)
    poll_interval: float = Field(300.0, gt=0)
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
    rules: list[Path] = Field(default_factory=list)
    receiver: ReceiverConfig = Field(default_factory=ReceiverConfig)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list)

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


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


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
            raw = yaml.safe_load(file.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read the configuration: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{file}{where}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: the configuration must be a mapping of sections")
        rules = raw.get("rules")
        if isinstance(rules, list):
            raw["rules"] = [str(r if Path(r).is_absolute() else (file.parent / r)) for r in rules]
    saved_env = None
    if environ is not None:
        saved_env = dict(os.environ)
        for key in [k for k in os.environ if k.startswith("FHIRBRIDGE_")]:
            del os.environ[key]
        os.environ.update({k: v for k, v in environ.items() if k.startswith("FHIRBRIDGE_")})
    try:
        return Config(**raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = _dotted(tuple(first["loc"])) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {key}: {message}{more}") from None
    finally:
        if saved_env is not None:
            os.environ.clear()
            os.environ.update(saved_env)
