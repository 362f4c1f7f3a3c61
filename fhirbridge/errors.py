"""The errors fhirbridge raises.

Every error derives from :class:`FhirBridgeError`; catch that to catch them all.
The docstring of each class is its default message::

    FhirBridgeError
    ├── ConfigError              bad configuration (names the key or file)
    │   └── RuleError            a rule file that does not validate (file, rule id, path)
    ├── FhirError                talking to a FHIR server failed
    │   ├── TransportError       no HTTP answer: connection refused, reset, DNS, TLS
    │   │   └── FhirTimeoutError the server did not answer in time
    │   └── ServerError          an HTTP answer that is an error (status + OperationOutcome)
    │       ├── AuthError              401 / 403, or the token endpoint refused us
    │       ├── ResourceNotFound       404 / 410
    │       ├── VersionConflict        409 / 412 after If-Match: someone else wrote first
    │       ├── MultipleMatches        412 on a conditional create or update: >1 match
    │       ├── InvalidResource        400 / 422: the server rejected what we sent
    │       └── RateLimited            429 or 503 after every retry was spent
    ├── StoreError               the journal database failed
    │   └── JournalBusy          another process holds the journal's writer lock
    └── ProfileError             an outgoing resource does not satisfy the engine's profile
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AuthError",
    "ConfigError",
    "FhirBridgeError",
    "FhirError",
    "FhirTimeoutError",
    "InvalidResource",
    "JournalBusy",
    "MultipleMatches",
    "OutcomeIssue",
    "ProfileError",
    "RateLimited",
    "ResourceNotFound",
    "RuleError",
    "ServerError",
    "StoreError",
    "TransportError",
    "VersionConflict",
]


class FhirBridgeError(Exception):
    """fhirbridge failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or "").strip().splitlines()[0]
        super().__init__(self.message)


class ConfigError(FhirBridgeError):
    """The configuration is not valid: fix the named key and run again."""


class RuleError(ConfigError):
    """A rule file is not valid: fix the named rule and run again."""


class StoreError(FhirBridgeError):
    """The journal database failed: check that it is reachable and writable."""


class JournalBusy(StoreError):
    """Another process is writing this journal for the same FHIR server: stop it first."""


class ProfileError(FhirBridgeError):
    """An outgoing resource does not satisfy the engine's profile; it was not sent."""


class FhirError(FhirBridgeError):
    """A request to the FHIR server failed."""

    def __init__(self, message: str | None = None, *, method: str = "", url: str = "") -> None:
        self.method = method
        self.url = url
        super().__init__(message)


class TransportError(FhirError):
    """The FHIR server could not be reached: check the base URL, network and TLS settings."""


class FhirTimeoutError(TransportError):
    """The FHIR server did not answer in time: raise fhir.timeout or check the server's load."""


@dataclass(frozen=True, slots=True)
class OutcomeIssue:
    """One ``OperationOutcome.issue``: severity, code and the human text (diagnostics/details)."""

    severity: str
    code: str
    text: str = ""
    expression: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f" at {', '.join(self.expression)}" if self.expression else ""
        return f"{self.severity} {self.code}{where}: {self.text}".rstrip(": ")


def issues_from_outcome(body: Any) -> tuple[OutcomeIssue, ...]:
    """Read the issues of an OperationOutcome dict; anything else gives no issues."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return ()
    found: list[OutcomeIssue] = []
    for issue in body.get("issue") or ():
        if not isinstance(issue, Mapping):
            continue
        details = issue.get("details") or {}
        detail_text = details.get("text") if isinstance(details, Mapping) else ""
        text = issue.get("diagnostics") or detail_text
        expression = issue.get("expression") or issue.get("location") or ()
        found.append(
            OutcomeIssue(
                severity=str(issue.get("severity", "error")),
                code=str(issue.get("code", "unknown")),
                text=str(text or ""),
                expression=tuple(str(e) for e in expression if isinstance(e, str)),
            )
        )
    return tuple(found)


class ServerError(FhirError):
    """The FHIR server answered with an error."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int,
        method: str = "",
        url: str = "",
        issues: Sequence[OutcomeIssue] = (),
        outcome: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.issues = tuple(issues)
        self.outcome = outcome
        base = message or (type(self).__doc__ or "").strip().splitlines()[0]
        detail = "; ".join(str(i) for i in self.issues)
        # the query may carry search values (PHI): the message names the path only
        where = url.split("?", 1)[0]
        text = f"{base} (HTTP {status}"
        text += f" on {method} {where})" if method else ")"
        super().__init__(f"{text}: {detail}" if detail else text, method=method, url=url)


class AuthError(ServerError):
    """The FHIR server refused our credentials: check fhir.auth and the granted scopes."""


class ResourceNotFound(ServerError):
    """The resource does not exist on the FHIR server, or was deleted."""


class VersionConflict(ServerError):
    """The resource changed on the server since we read it: re-read it and apply again."""


class MultipleMatches(ServerError):
    """A conditional create or update matched more than one resource; it was not applied."""


class InvalidResource(ServerError):
    """The FHIR server rejected the resource we sent as invalid."""


class RateLimited(ServerError):
    """The FHIR server is throttling us or unavailable: lower the load or raise fhir.retry."""
