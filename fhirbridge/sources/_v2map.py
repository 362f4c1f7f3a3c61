"""HL7 v2 ADT -> FHIR R4, as pure functions: read one message, overlay it on a server resource.

``read_adt(text, tables, tz)`` parses one message with python-hl7 and maps PID and PV1 per the
V2-to-FHIR IG into an :class:`AdtMessage`; ``overlay_encounter`` and ``overlay_patient`` lay
that over the Encounter and Patient the FHIR server holds, as the v2 event's new version
(``meta.versionId`` ``v2:<MSH-10>``, ``meta.lastUpdated`` MSH-7). Timestamps without an
offset are read in ``tz`` (the facility's time zone). The code tables live in
``mappings/hl7v2.yaml``. Errors name the segment and field: ``PV1-44: '2015x' is not ...``.
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import cache
from pathlib import Path
from typing import Any, Literal

import hl7
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fhirbridge._shipped import mappings_dir
from fhirbridge._yaml import read_yaml, validation_error
from fhirbridge.errors import FhirBridgeError

__all__ = [
    "AdtMessage",
    "V2Error",
    "V2Limits",
    "V2Tables",
    "check_frame",
    "check_header",
    "overlay_encounter",
    "overlay_patient",
    "read_adt",
]

_DTM = re.compile(r"(\d{4}|\d{6}|\d{8}|\d{10}|\d{12}|\d{14}(\.\d{1,4})?)([+-]\d{4})?")
_OPEN = ("in-progress", "planned")


class V2Error(FhirBridgeError):
    """An HL7 v2 message could not be read."""

    def __init__(self, where: str, problem: str, *, code: str = "AR") -> None:
        self.where = where
        self.ack_code = code  # AR: the message itself is unusable; AE: processing failed
        self.control_id = ""  # MSH-10, when the message got that far
        super().__init__(f"{where}: {problem}" if where else problem)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Event(_Model):
    status: Literal["in-progress", "finished", "planned", "cancelled", "keep"]
    discharge_date: Literal["apply", "ignore"] = "apply"


class _Coded(_Model):
    code: str
    display: str = ""


class _Ids(_Model):
    visit_system: str
    mrn_system: str
    mrn_types: tuple[str, ...] = ("MR",)
    assigning_authorities: dict[str, str] = Field(default_factory=dict)


class _Classes(_Model):
    system: str
    codes: dict[str, _Coded | None] = Field(min_length=1)


class _AdmitSource(_Model):
    system: str
    v2_system: str
    codes: dict[str, str] = Field(default_factory=dict)


class _Disposition(_Model):
    system: str
    table_names: tuple[str, ...] = ()
    death: tuple[str, ...] = ()


class V2Tables(_Model):
    """The code tables of ``mappings/hl7v2.yaml``."""

    version: Literal[1]
    identifiers: _Ids
    events: dict[str, _Event] = Field(min_length=1)
    patient_class: _Classes
    admit_source: _AdmitSource
    discharge_disposition: _Disposition
    identifier_type_system: str

    @classmethod
    def load(cls, path: Path | None = None) -> V2Tables:
        """Load a table file (default: the shipped one); a bad file raises RuleError with
        the file, line and key."""
        doc = read_yaml(path if path is not None else mappings_dir() / "hl7v2.yaml")
        try:
            return cls.model_validate(doc.data)
        except ValidationError as exc:
            raise validation_error(doc, exc) from exc


@cache
def default_tables() -> V2Tables:
    """The shipped tables, loaded once."""
    return V2Tables.load()


@dataclass(frozen=True, slots=True)
class AdtMessage:
    """What one ADT message says, mapped to FHIR element values.

    ``encounter`` holds the Encounter elements PV1 valued; ``cleared`` the ones the message
    voids (HL7 null ``""``, or a reopened stay); ``status`` None keeps the server's status.
    """

    control_id: str
    event: str
    sent_at: datetime
    visit_number: str
    mrn: str
    status: str | None
    encounter: Mapping[str, Any] = field(default_factory=dict)
    cleared: frozenset[str] = frozenset()
    patient: Mapping[str, Any] = field(default_factory=dict)
    deceased: bool = False


class _Reader:
    """Field access on one parsed message: absent fields read as ``""``, errors name them."""

    def __init__(self, message: Any, tz: tzinfo) -> None:
        self.segments = {str(seg[0]): seg for seg in reversed(message)}  # first of each wins
        self.tz = tz

    def has(self, segment: str) -> bool:
        return segment in self.segments

    def get(self, where: str, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
        name, _, number = where.partition("-")
        seg = self.segments.get(name)
        if seg is None:
            return ""
        try:
            return str(seg.extract_field(1, int(number), rep, comp, sub)).strip()
        except IndexError:
            return ""

    def reps(self, where: str) -> int:
        name, _, number = where.partition("-")
        seg = self.segments.get(name)
        index = int(number)
        return len(seg[index]) if seg is not None and index < len(seg) and str(seg[index]) else 0

    def when(self, where: str) -> tuple[datetime, int] | None:
        """A DTM (or TS component 1) as an aware datetime and its precision in digits."""
        text = self.get(where)
        if not text or text == hl7.NULL:
            return None
        match = _DTM.fullmatch(text)
        if match is None:
            raise V2Error(
                where, f"{text!r} is not an HL7 date/time (YYYY[MM[DD[HHMM[SS]]]][+/-ZZZZ])"
            )
        try:
            parsed: datetime = hl7.parse_datetime(text)
        except ValueError as exc:
            raise V2Error(where, f"{text!r} is not a valid date/time: {exc}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.tz)
        return parsed, len(match.group(1).split(".")[0])


def fhir_datetime(value: tuple[datetime, int]) -> str:
    """A FHIR dateTime with the precision the v2 value had (date-only values stay dates)."""
    moment, digits = value
    if digits <= 8:
        return moment.strftime("%Y-%m-%d")[: {4: 4, 6: 7}.get(digits, 10)]
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec)


class _Withheld(logging.Filter):
    """python-hl7 logs the text of a field it cannot unescape: keep the event, not the PHI."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args, record.exc_info = (
            "python-hl7: bad escape (value withheld)",
            (),
            None,
        )
        return True


@cache
def _guard_hl7_log() -> None:
    logging.getLogger(hl7.util.__file__).addFilter(_Withheld())


@dataclass(frozen=True, slots=True)
class V2Limits:
    """How many segments a message and how many characters a field may hold."""

    segments: int = 1000
    field: int = 65536


def check_header(text: str) -> None:
    """Refuse a message holding a NUL, or whose MSH cannot be read: ``MSH``, the field
    separator, then the encoding characters (component, repetition, escape, subcomponent;
    v2.7 may add a truncation character), all distinct, none a letter, digit or space, then
    the separator again. python-hl7 asserts rather than reports on these: checked first."""
    if not text.startswith("MSH") or len(text) < 4:
        raise V2Error("MSH", "the message does not start with an MSH segment")
    if (nul := text.find("\x00")) >= 0:  # no v2 text holds one; a journal cannot keep it
        raise V2Error("", f"the message holds a NUL character at offset {nul}")
    sep = text[3]
    encoding = text[4:].split(sep, 1)[0].split("\r", 1)[0]
    if sep.isalnum() or sep.isspace():
        raise V2Error("MSH-1", f"{sep!r} cannot be the field separator")
    if not 4 <= len(encoding) <= 5:
        raise V2Error("MSH-2", f"{encoding[:10]!r} is not the 4 encoding characters (^~\\&)")
    chars = sep + encoding
    if len(set(chars)) != len(chars) or any(c.isalnum() or c.isspace() for c in chars):
        raise V2Error("MSH-2", f"{encoding!r} are not distinct separator characters")
    if len(text) <= 4 + len(encoding) or text[4 + len(encoding)] != sep:
        raise V2Error("MSH-2", "the encoding characters are not followed by a field")


def check_frame(text: str, limits: V2Limits) -> None:
    """Refuse a message with more segments, or a longer field, than ``limits`` allow."""
    segments = [s for s in text.split("\r") if s]
    if len(segments) > limits.segments:
        raise V2Error("", f"the message has {len(segments)} segments, more than {limits.segments}")
    sep = text[3] if len(text) > 3 else "|"
    for segment in segments:
        if len(segment) > limits.field:  # cheap test first: most segments are short
            longest = max(len(f) for f in segment.split(sep))
            if longest > limits.field:
                raise V2Error(
                    segment[:3], f"a field is {longest} characters, more than {limits.field}"
                )


def read_adt(text: str, tables: V2Tables | None = None, tz: tzinfo | None = None) -> AdtMessage:
    """Map one ADT message (segments separated by ``\\r``). Raises :class:`V2Error`."""
    tables = tables or default_tables()
    check_header(text)
    _guard_hl7_log()
    with warnings.catch_warnings():  # python-hl7 calls the deprecated Logger.warn
        warnings.filterwarnings("ignore", "The 'warn' method", DeprecationWarning)
        try:
            r = _Reader(hl7.parse(text), tz or UTC)
        except (hl7.ParseException, ValueError, IndexError, AssertionError) as exc:
            raise V2Error("MSH", f"not an HL7 v2 message: {exc or type(exc).__name__}") from exc
        control_id = r.get("MSH-10")
        try:
            return _read(r, tables, control_id)
        except V2Error as exc:
            exc.control_id = control_id
            raise


def _read(r: _Reader, tables: V2Tables, control_id: str) -> AdtMessage:
    kind, event = r.get("MSH-9", comp=1), r.get("MSH-9", comp=2) or r.get("EVN-1")
    if not control_id:
        raise V2Error("MSH-10", "the message control id is empty")
    sent = r.when("MSH-7")
    if sent is None:
        raise V2Error("MSH-7", "the date/time of the message is empty")
    if kind != "ADT" or event not in tables.events:
        handled = ", ".join(sorted(tables.events))
        raise V2Error("MSH-9", f"{kind}^{event} is not an ADT event handled here ({handled})")
    if not r.has("PV1"):
        raise V2Error("PV1", f"ADT^{event} has no PV1 segment")
    visit = r.get("PV1-19")
    if not visit or visit == hl7.NULL:
        raise V2Error("PV1-19", "the visit number is empty: the Encounter cannot be found")
    patient = _patient(r, tables)
    mrn = _mrn(r, tables)
    encounter, cleared, status = _encounter(r, tables, event)
    death_codes = tables.discharge_disposition.death
    concept = (encounter.get("hospitalization") or {}).get("dischargeDisposition", {})
    coding = (concept.get("coding") or [{}])[0]
    expired = coding.get("system") == tables.discharge_disposition.system and (
        coding.get("code") in death_codes
    )
    deceased = "deceasedBoolean" in patient or "deceasedDateTime" in patient
    if event == "A03" and expired and not deceased:
        patient["deceasedBoolean"] = True
        deceased = True
    return AdtMessage(
        control_id=control_id,
        event=event,
        sent_at=sent[0],
        visit_number=visit,
        mrn=mrn,
        status=status,
        encounter=encounter,
        cleared=frozenset(cleared),
        patient=patient,
        deceased=deceased,
    )


def _encounter(r: _Reader, t: V2Tables, event: str) -> tuple[dict[str, Any], set[str], str | None]:
    spec = t.events[event]
    status: str | None = None if spec.status == "keep" else spec.status
    out: dict[str, Any] = {}
    cleared: set[str] = set()
    klass = r.get("PV1-2")
    if klass and klass != hl7.NULL:
        if klass not in t.patient_class.codes:
            known = ", ".join(t.patient_class.codes)
            raise V2Error("PV1-2", f"{klass!r} is not a patient class in the table ({known})")
        coded = t.patient_class.codes[klass]
        if coded is not None:
            out["class"] = {"system": t.patient_class.system, "code": coded.code}
            if coded.display:
                out["class"]["display"] = coded.display
    period: dict[str, str] = {}
    for where, key in (("PV1-44", "start"), ("PV1-45", "end")):
        value = r.when(where)
        if value is not None:
            period[key] = fhir_datetime(value)
        elif r.get(where) == hl7.NULL:
            cleared.add(f"period.{key}")
    if spec.discharge_date == "ignore":
        period.pop("end", None)
        cleared.discard("period.end")
    elif "end" in period:
        status = "finished"
    if period:
        out["period"] = period
    if status in _OPEN and "end" not in period:
        cleared |= {"period.end", "hospitalization.dischargeDisposition"}
    hospitalization: dict[str, Any] = {}
    source = r.get("PV1-14")
    if source and source != hl7.NULL:
        codings = [{"system": t.admit_source.v2_system, "code": source}]
        if source in t.admit_source.codes:
            codings.insert(
                0, {"system": t.admit_source.system, "code": t.admit_source.codes[source]}
            )
        hospitalization["admitSource"] = {"coding": codings}
    disposition = _disposition(r, t)
    if r.get("PV1-36") == hl7.NULL:
        cleared.add("hospitalization.dischargeDisposition")
    if disposition is not None and "hospitalization.dischargeDisposition" not in cleared:
        hospitalization["dischargeDisposition"] = disposition
    if hospitalization:
        out["hospitalization"] = hospitalization
    planned = (out.get("class") or {}).get("code") == "PRENC"
    locations = [
        {"location": {"display": name}, "status": state}
        for where, state in (("PV1-3", "planned" if planned else "active"), ("PV1-6", "completed"))
        if (name := _place(r, where))
    ]
    if locations:
        out["location"] = locations
    return out, cleared, status


def _disposition(r: _Reader, t: V2Tables) -> dict[str, Any] | None:
    code = r.get("PV1-36")
    if not code or code == hl7.NULL:
        return None
    display, table = r.get("PV1-36", comp=2), r.get("PV1-36", comp=3)
    known = not table or table in t.discharge_disposition.table_names
    coding = {"system": t.discharge_disposition.system, "code": code} if known else {"code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], **({} if known else {"text": f"{display or code} ({table})"})}


def _place(r: _Reader, where: str) -> str:
    """A PL as display text: point of care, room, bed, facility."""
    parts = [r.get(where, comp=c) for c in (1, 2, 3)] + [r.get(where, comp=4, sub=1)]
    return ", ".join(p for p in parts if p and p != hl7.NULL)


def _patient(r: _Reader, t: V2Tables) -> dict[str, Any]:
    identifiers = []
    for rep in range(1, r.reps("PID-3") + 1):
        value = r.get("PID-3", rep, 1)
        if not value:
            continue
        ident: dict[str, Any] = {"value": value}
        namespace, oid, kind = (r.get("PID-3", rep, 4, s) for s in (1, 2, 3))
        if oid and kind == "ISO":
            ident["system"] = f"urn:oid:{oid}"
        elif oid and kind in ("URI", "URL"):
            ident["system"] = oid
        elif namespace in t.identifiers.assigning_authorities:
            ident["system"] = t.identifiers.assigning_authorities[namespace]
        if type_code := r.get("PID-3", rep, 5):
            ident["type"] = {"coding": [{"system": t.identifier_type_system, "code": type_code}]}
        identifiers.append(ident)
    patient: dict[str, Any] = {"identifier": identifiers} if identifiers else {}
    died = r.when("PID-29")
    flag = r.get("PID-30").upper()
    if flag not in ("", "Y", "N", "YES", "NO", hl7.NULL):
        raise V2Error("PID-30", f"{r.get('PID-30')!r} is not a yes/no indicator (Y or N)")
    if died is not None:
        patient["deceasedDateTime"] = fhir_datetime(died)
    elif flag in ("Y", "YES"):
        patient["deceasedBoolean"] = True
    return patient


def _mrn(r: _Reader, t: V2Tables) -> str:
    """The PID-3 repetition typed as an MRN (CX.5), else the first one."""
    values = [(r.get("PID-3", n, 1), r.get("PID-3", n, 5)) for n in range(1, r.reps("PID-3") + 1)]
    values = [(v, k) for v, k in values if v and v != hl7.NULL]
    if not values:
        raise V2Error("PID-3", "no patient identifier: the Patient cannot be found")
    return next((v for v, k in values if k in t.identifiers.mrn_types), values[0][0])


def _meta(base: Mapping[str, Any], msg: AdtMessage) -> dict[str, Any]:
    meta = {
        k: v for k, v in (base.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")
    }
    stamp = fhir_datetime((msg.sent_at, 14))
    # senders reuse control ids (and reset their counters): the event and the message time
    # make the journal's version key unique per message
    version = f"v2:{msg.event}:{msg.control_id}:{msg.sent_at.strftime('%Y%m%d%H%M%S')}"
    return {**meta, "versionId": version, "lastUpdated": stamp}


def overlay_encounter(
    server: Mapping[str, Any], msg: AdtMessage, visit_system: str
) -> dict[str, Any]:
    """The server's Encounter with what the message says laid over it (a new version).

    Locations from PV1-3/PV1-6 are display-only references; they are used only when the
    server's Encounter has none (its references are the ones detection can follow).
    """
    out = copy.deepcopy(dict(server))
    out["meta"] = _meta(server, msg)
    if msg.status is not None:
        out["status"] = msg.status
    if "class" in msg.encounter:
        out["class"] = dict(msg.encounter["class"])
    period = {**(out.get("period") or {}), **msg.encounter.get("period", {})}
    hospitalization = {
        **(out.get("hospitalization") or {}),
        **msg.encounter.get("hospitalization", {}),
    }
    for path in msg.cleared:
        holder, _, key = path.partition(".")
        (period if holder == "period" else hospitalization).pop(key, None)
    for key, value in (("period", period), ("hospitalization", hospitalization)):
        if value:
            out[key] = value
        else:
            out.pop(key, None)
    if not out.get("location") and msg.encounter.get("location"):
        out["location"] = copy.deepcopy(list(msg.encounter["location"]))
    identifiers = list(out.get("identifier") or [])
    if not any(
        i.get("system") == visit_system and i.get("value") == msg.visit_number for i in identifiers
    ):
        identifiers.append({"system": visit_system, "value": msg.visit_number})
    out["identifier"] = identifiers
    return out


def overlay_patient(server: Mapping[str, Any], msg: AdtMessage) -> dict[str, Any] | None:
    """The server's Patient marked deceased as the message says, or None when it says not."""
    if not msg.deceased:
        return None
    out = copy.deepcopy(dict(server))
    out["meta"] = _meta(server, msg)
    out.pop("deceasedBoolean", None)
    out.pop("deceasedDateTime", None)
    for key in ("deceasedDateTime", "deceasedBoolean"):
        if key in msg.patient:
            out[key] = msg.patient[key]
            break
    return out
