"""Discharge disposition codes, from any code system, to the groups rules test.

``Encounter.hospitalization.dischargeDisposition`` has only an example binding, so real feeds
send FHIR's own codes (``home``, ``snf``, ``hosp``...), NUBC UB-04 patient status codes
(``01``, ``03``, ``50``...) under several URIs, or HL7 v2 table 0112 values. The tables live in
``mappings/dispositions.yaml``; this module loads them and answers one question:
which of :data:`GROUPS` does ``(system, code)`` belong to?

A known system with an unknown code, or no code at all, is ``unknown``. An unknown or missing
system falls back to the tables marked ``fallback: true`` (the FHIR base codes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from fhirbridge._shipped import mappings_dir
from fhirbridge._yaml import one_of, read_yaml, validation_error

__all__ = ["BASE_SYSTEM", "GROUPS", "DispositionTable", "disposition_group"]

#: The disposition groups, in the order messages list them.
GROUPS: tuple[str, ...] = (
    "community",
    "post-acute",
    "transfer",
    "hospice",
    "against-advice",
    "death",
    "unknown",
)

#: The FHIR R4 discharge-disposition code system.
BASE_SYSTEM = "http://terminology.hl7.org/CodeSystem/discharge-disposition"

_FILE = "dispositions.yaml"


def _system_key(system: str) -> str:
    """Compare systems without scheme, case of the host, or trailing slash."""
    text = system.strip().rstrip("/")
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            return text[len(scheme) :]
    return text


def _code_key(code: str, pad: int) -> str:
    """Codes compare without surrounding space or case; numeric ones zero-padded to ``pad``."""
    text = code.strip()
    if pad and text.isdigit():
        return str(int(text)).zfill(pad)
    return text.casefold()


def _code_text(value: object) -> object:
    # YAML reads an unquoted 1 as an int; codes are text.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _code_keys(value: object) -> object:
    if isinstance(value, Mapping):
        return {_code_text(k): _code_text(v) for k, v in value.items()}
    return value


_Group = Annotated[str, AfterValidator(one_of(GROUPS))]
_Codes = Annotated[dict[str, _Group], BeforeValidator(_code_keys)]
_SameAs = Annotated[dict[str, str], BeforeValidator(_code_keys)]


class _TableModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    systems: tuple[str, ...] = Field(min_length=1)
    pad: int = Field(default=0, ge=0, le=4)
    fallback: bool = False
    codes: _Codes = Field(min_length=1)
    same_as: _SameAs = Field(default_factory=dict)

    @field_validator("same_as")
    @classmethod
    def _same_as_known(cls, same_as: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        pad = info.data.get("pad", 0)
        codes = {_code_key(c, pad) for c in info.data.get("codes", {})}
        for code, target in same_as.items():
            if _code_key(code, pad) in codes:
                raise ValueError(f"{code!r} is already in codes")
            if _code_key(target, pad) not in codes:
                raise ValueError(f"{code!r} points at {target!r}, which is not in codes")
        return same_as


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    tables: tuple[_TableModel, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    codes: Mapping[str, str]
    pad: int
    fallback: bool

    def lookup(self, code: str) -> str | None:
        return self.codes.get(_code_key(code, self.pad))


@dataclass(frozen=True, slots=True)
class DispositionTable:
    """Disposition code tables by code system; :meth:`group` maps a code to a group."""

    tables: tuple[_Table, ...]
    by_system: Mapping[str, _Table] = field(repr=False)
    source: Path | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> DispositionTable:
        """Load a table file (default: the shipped ``mappings/dispositions.yaml``).

        Raises :class:`~fhirbridge.errors.RuleError` naming the file, line and key when the
        file is not valid.
        """
        path = path if path is not None else mappings_dir() / _FILE
        doc = read_yaml(path)
        try:
            model = _FileModel.model_validate(doc.data)
        except ValidationError as exc:
            raise validation_error(doc, exc) from exc
        tables: list[_Table] = []
        by_system: dict[str, _Table] = {}
        for index, spec in enumerate(model.tables):
            codes = {_code_key(c, spec.pad): g for c, g in spec.codes.items()}
            for code, target in spec.same_as.items():
                codes[_code_key(code, spec.pad)] = codes[_code_key(target, spec.pad)]
            table = _Table(name=spec.name, codes=codes, pad=spec.pad, fallback=spec.fallback)
            tables.append(table)
            for number, system in enumerate(spec.systems):
                key = _system_key(system)
                if key in by_system:
                    raise doc.error(
                        ("tables", index, "systems", number),
                        f"{system!r} is already served by table {by_system[key].name!r}",
                    )
                by_system[key] = table
        return cls(tables=tuple(tables), by_system=by_system, source=path)

    def group(self, system: str | None, code: str | None) -> str:
        """The group of ``(system, code)``; ``unknown`` when no table knows it."""
        if code is None or not code.strip():
            return "unknown"
        table = self.by_system.get(_system_key(system)) if system and system.strip() else None
        if table is not None:
            return table.lookup(code) or "unknown"
        for fallback in self.tables:
            if fallback.fallback:
                found = fallback.lookup(code)
                if found:
                    return found
        return "unknown"


@cache
def default_table() -> DispositionTable:
    """The shipped table, loaded once."""
    return DispositionTable.load()


def disposition_group(system: str | None, code: str | None) -> str:
    """The group of a discharge disposition per the shipped ``mappings/dispositions.yaml``.

    >>> disposition_group("http://terminology.hl7.org/CodeSystem/discharge-disposition", "hosp")
    'hospice'
    """
    return default_table().group(system, code)
