"""Per-code figures of the engine's Tasks (what ``fhirbridge report`` printed first).

- follow-up completion: of the engine's Tasks per code, how many are completed, and how many
  were completed by their due date;
- referral completion: of the tracking Tasks, how many closed completed;
- overdue work per owner: open Tasks past their due date, grouped by owner.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhirbridge.detect.projection import local_reference
from fhirbridge.values import TASK_CODE_SYSTEM, parse_instant

__all__ = ["OPEN", "CodeFigures", "Report", "build_report", "task_code"]

#: Task statuses that still ask for work.
OPEN = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})


@dataclass(slots=True)
class CodeFigures:
    """Counts for one Task code."""

    total: int = 0
    completed: int = 0
    on_time: int = 0
    cancelled: int = 0
    open: int = 0
    overdue: int = 0

    @property
    def completion(self) -> float | None:
        """Completed over all that were not cancelled (None when there are none)."""
        eligible = self.total - self.cancelled
        return self.completed / eligible if eligible else None


@dataclass(slots=True)
class Report:
    """The KPIs as of one day."""

    as_of: date
    by_code: dict[str, CodeFigures] = field(default_factory=dict)
    overdue_by_owner: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "as_of": self.as_of.isoformat(),
            "by_code": {
                code: {
                    "total": f.total,
                    "completed": f.completed,
                    "completed_on_time": f.on_time,
                    "cancelled": f.cancelled,
                    "open": f.open,
                    "overdue": f.overdue,
                    "completion": f.completion,
                }
                for code, f in sorted(self.by_code.items())
            },
            "overdue_by_owner": dict(sorted(self.overdue_by_owner.items())),
        }


def task_code(task: Mapping[str, Any]) -> str:
    """The engine's code of a Task (``unknown`` when it carries none)."""
    for coding in (task.get("code") or {}).get("coding") or ():
        if coding.get("system") == TASK_CODE_SYSTEM and coding.get("code"):
            return str(coding["code"])
    return "unknown"


def build_report(tasks: Iterable[Mapping[str, Any]], as_of: date) -> Report:
    """The KPIs of the engine's Tasks (plain JSON) as of ``as_of`` (pure)."""
    report = Report(as_of=as_of)
    figures: defaultdict[str, CodeFigures] = defaultdict(CodeFigures)
    overdue: Counter[str] = Counter()
    for task in tasks:
        figure = figures[task_code(task)]
        figure.total += 1
        status = task.get("status")
        due = parse_instant(((task.get("restriction") or {}).get("period") or {}).get("end"))
        if status == "completed":
            figure.completed += 1
            done = parse_instant(
                task.get("lastModified") or (task.get("meta") or {}).get("lastUpdated")
            )
            if due is not None and done is not None and done.date() <= due.date():
                figure.on_time += 1
        elif status in ("cancelled", "entered-in-error", "rejected"):
            figure.cancelled += 1
        elif status in OPEN:
            figure.open += 1
            if due is not None and due.date() < as_of:
                figure.overdue += 1
                overdue[local_reference(task.get("owner")) or "(no owner)"] += 1
    report.by_code = dict(figures)
    report.overdue_by_owner = dict(overdue)
    return report
