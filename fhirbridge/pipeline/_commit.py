"""The commit stage: outcomes -> the journal, in as few transactions as is safe.

A batch's outcomes are recorded in one transaction (no awaits inside: nothing interleaves),
in arrival order. When that transaction fails for a reason that is not the journal's (a
version the journal cannot store, such as text with a lone surrogate), it is undone and the
outcomes are recorded one by one: the one that fails is dead-lettered with the exception's
type and message, and the pass goes on. Journal failures (:class:`StoreError`) propagate:
the batch stays pending for a retry.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from fhirbridge.errors import StoreError
from fhirbridge.pipeline._evaluate import Evaluator, Outcome
from fhirbridge.pipeline._stats import RunStats
from fhirbridge.store.base import Store

__all__ = ["Committer"]

log = structlog.get_logger(__name__)


class Committer:
    """Records outcomes in the journal and counts them."""

    def __init__(self, store: Store, evaluator: Evaluator) -> None:
        self.store = store
        self.evaluator = evaluator

    def commit(
        self,
        outcomes: Sequence[Outcome],
        stats: RunStats,
        lanes: Sequence[int] | None = None,
    ) -> list[int]:
        """Record ``outcomes`` (``lanes`` names each one's lane); returns the positions left
        unrecorded because an earlier version of their lane was refused by the journal:
        they were evaluated as if it had been recorded, and deserve a second look."""
        if not outcomes:
            return []
        try:
            with self.store.batch():
                for outcome in outcomes:
                    self._record(outcome)
        except StoreError:
            self.evaluator.forget_views()
            raise
        except Exception:
            self.evaluator.forget_views()
            return self._one_by_one(outcomes, stats, lanes or range(len(outcomes)))
        self._counted(outcomes, stats)
        return []

    def _one_by_one(
        self, outcomes: Sequence[Outcome], stats: RunStats, lanes: Sequence[int]
    ) -> list[int]:
        refused: set[int] = set()
        skipped: list[int] = []
        for position, outcome in enumerate(outcomes):
            if lanes[position] in refused:
                skipped.append(position)
                continue
            try:
                with self.store.batch():
                    self._record(outcome)
            except StoreError:
                raise
            except Exception as exc:
                outcome = Outcome(outcome.version, error=exc)
                self._record(outcome)
                refused.add(lanes[position])
            self._counted([outcome], stats)
        return skipped

    def _record(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            self.store.reject(outcome.version, outcome.reason)
            return
        self.store.complete(
            outcome.version,
            transitions=outcome.transitions,
            outbox=outcome.items,
            notes=outcome.notes,
            update_snapshot=outcome.newer,
        )

    def _counted(self, outcomes: Sequence[Outcome], stats: RunStats) -> None:
        self.evaluator.remember(outcomes)
        for outcome in outcomes:
            stats.processed += 1
            if outcome.error is not None:
                stats.reject(outcome.error)
                log.warning(
                    "version_rejected",
                    resource=outcome.version.reference,
                    error=type(outcome.error).__name__,
                )
                continue
            stats.transitions += len(outcome.transitions)
            stats.planned += len(outcome.items)
            if stats.keep_plans:
                stats.plans.extend(outcome.plans)
            for transition in outcome.transitions:
                log.info(
                    "transition_detected",
                    kind=transition.kind.value,
                    resource=transition.focus,
                    planned=sum(
                        len(p.actions) for p in outcome.plans if p.transition is transition
                    ),
                )
