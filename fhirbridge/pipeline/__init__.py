"""The pipeline: named stages and the one pass loop every driver feeds.

::

    versions --> Evaluator (lanes: detect, Lookups prefetch, Planner + Policy)
             --> Committer (one journal transaction per batch; dead letters)
             --> Sweeper (overdue Tasks, when due)
             --> WriteStage (the outbox, through the writer; off for ``plan``)

A worker sharing a journal with others runs the same stages on the patient lanes it leases
(:class:`WorkerLeases`).

:class:`Pipeline.run_pass` runs them; :class:`fhirbridge.Bridge` wires them from the
configuration and is what drivers call.
"""

from __future__ import annotations

from fhirbridge.pipeline._commit import Committer
from fhirbridge.pipeline._evaluate import Evaluator, Outcome
from fhirbridge.pipeline._lanes import lane_marks, lanes, run_lanes
from fhirbridge.pipeline._leases import WorkerLeases, poll_lease_name, timers_lease_name
from fhirbridge.pipeline._lookups import LAB_CODES, Lookups, RiskInputs
from fhirbridge.pipeline._plan import Planner
from fhirbridge.pipeline._policy import (
    CloseCompletedActivity,
    Enriched,
    Planning,
    Policy,
    RiskScores,
    default_policy,
)
from fhirbridge.pipeline._run import Feed, Pipeline, Sink
from fhirbridge.pipeline._stats import RunStats
from fhirbridge.pipeline._sweep import SWEEP_MARK, Sweeper
from fhirbridge.pipeline._write import WriteStage

__all__ = [
    "CloseCompletedActivity",
    "Committer",
    "Enriched",
    "Evaluator",
    "Feed",
    "LAB_CODES",
    "Lookups",
    "Outcome",
    "Pipeline",
    "Planner",
    "Planning",
    "Policy",
    "RiskInputs",
    "RiskScores",
    "RunStats",
    "SWEEP_MARK",
    "Sink",
    "Sweeper",
    "WorkerLeases",
    "WriteStage",
    "default_policy",
    "lane_marks",
    "lanes",
    "poll_lease_name",
    "run_lanes",
    "timers_lease_name",
]
