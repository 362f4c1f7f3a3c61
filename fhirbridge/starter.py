"""``fhirbridge init``: a commented starter configuration, a receiver secret, a journal."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fhirbridge.errors import ConfigError

__all__ = ["STARTER", "write_starter"]

STARTER = """\
# fhirbridge configuration. Every key can also come from the environment, with __ between
# levels: FHIRBRIDGE_FHIR__BASE_URL, FHIRBRIDGE_STORE__URL, FHIRBRIDGE_RECEIVER__SECRET ...
# Reference: README.md, "Configuration reference".

fhir:
  base_url: {base_url}        # the FHIR R4 server the engine watches and writes to
  name: default               # names this server in the journal; keep it stable
  timeout: 30                 # seconds per request
  verify_tls: true            # or a path to a CA bundle (PEM) for a private CA
  auth:
    type: none                # none | bearer | basic | smart
    # token_file: /run/secrets/fhir-token          # bearer
    # username: fhirbridge                          # basic
    # password_file: /run/secrets/fhir-password
    # client_id: fhirbridge                         # smart (SMART Backend Services)
    # private_key_file: /run/secrets/fhirbridge.pem
    # key_id: fhirbridge-2026

store:
  url: sqlite:///{journal}    # or postgresql://fhirbridge@db.example.org/fhirbridge

engine:
  poll_interval: 60           # seconds between passes of `fhirbridge run`
  max_event_age: P14D         # older transitions are journalled but create no work
  timezone: America/New_York  # the facility's zone: business days and lengths of stay
  # holidays: [2026-12-25, 2027-01-01]
  default_owner: Organization/care-coordination   # owner when no care-team role matches

# rules:                      # your own rule files, added to the shipped pack
#   files: [my-rules.yaml]
#   replace_shipped: false

receiver:                     # `fhirbridge serve`
  host: 127.0.0.1
  port: 8089
  secret_file: {secret}       # senders present it as Authorization: Bearer <secret>
  # public_url: https://fhirbridge.example.org   # what Subscriptions point at

# subscriptions:              # `fhirbridge subscribe` creates these on the server
#   - criteria: Encounter?status=finished

# hl7:                        # `fhirbridge hl7`: how PV1-19 and PID-3 appear on the server
#   visit_system: urn:oid:2.16.840.1.113883.19.5.99999.1
#   mrn_system: urn:oid:2.16.840.1.113883.19.5.99999.2

logging:
  format: auto                # auto (console on a terminal, JSON otherwise) | json | console
  level: info                 # for run, serve and hl7 --listen
"""


def write_starter(folder: Path, *, base_url: str, force: bool = False) -> list[Path]:
    """Write ``fhirbridge.yaml``, ``fhirbridge.secret`` (mode 0600) and create the SQLite
    journal ``fhirbridge.db`` in ``folder``; returns what was written. Refuses to overwrite
    an existing configuration unless ``force``; keeps an existing secret and journal."""
    from fhirbridge.store import open_store

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "fhirbridge.yaml"
    secret = folder / "fhirbridge.secret"
    journal = folder / "fhirbridge.db"
    if config.exists() and not force:
        raise ConfigError(f"{config} exists; pass --force to overwrite it")
    written: list[Path] = []
    text = STARTER.format(base_url=base_url, journal=journal.resolve(), secret=secret.resolve())
    config.write_text(text)
    written.append(config)
    if not secret.exists():
        descriptor = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(24) + "\n")
        written.append(secret)
    if not journal.exists():
        open_store(f"sqlite:///{journal.resolve()}").close()
        written.append(journal)
    return written
