"""fhirbridge.rules: declarative rules from ``mappings/*.yaml``, transition + context -> Plan.

Pure: values in, values out. Load once with :func:`load_rules` (bad rules fail there with
file, line, rule id and key), then call :meth:`RulePack.plan` per transition. The rule-pack
format is documented in :mod:`fhirbridge.rules.model`.
"""

from __future__ import annotations

from fhirbridge._shipped import mappings_dir
from fhirbridge.rules.calendar import BusinessCalendar
from fhirbridge.rules.dispositions import DispositionTable, disposition_group
from fhirbridge.rules.evaluate import PlanContext, RulePack
from fhirbridge.rules.loader import load_rules

__all__ = [
    "BusinessCalendar",
    "DispositionTable",
    "PlanContext",
    "RulePack",
    "disposition_group",
    "load_rules",
    "mappings_dir",
]
