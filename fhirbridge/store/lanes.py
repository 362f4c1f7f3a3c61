"""Patient lanes: one idea for the journal, the workers that share it, and the pipeline.

A patient's **lane key** is the CRC-32 of its reference (``Patient/id``,
:func:`~fhirbridge.store._codec.reference_lane_key`); among ``n`` lanes its lane is
``key % n`` (:data:`LANES` by default). Everything that orders work per patient uses it:

- the journal stores it with every resource version (the version's patient: the Patient
  itself, else ``subject``, ``patient``, ``for``, ...; a resource about no patient is a lane
  of its own) and every outbox item (the patient of the transition that planned it);
- workers sharing a PostgreSQL journal lease lanes (``Store.lease_lanes``): the holder of a
  lane is the only worker that evaluates its versions (``Store.pending_in_lanes``) and writes
  its outbox items (``Store.claim_outbox(lanes=...)``), so one patient's versions and writes
  keep their order across workers;
- inside one worker, the pipeline splits a batch into finer lanes
  (:func:`fhirbridge.pipeline.lanes`) that run concurrently: versions that share a resource or
  a patient, the patient named by this same key among the marks, so one in-process lane never
  holds two store lanes' patients unless a resource changed its patient between versions.

A resource whose versions name different patients (a merge) puts its versions in the lanes of
each: across workers only the version order within each patient's lane is kept.
"""

from __future__ import annotations

from fhirbridge.store._codec import lane_key as version_lane_key
from fhirbridge.store._codec import outbox_lane_key, patient_key, reference_lane_key
from fhirbridge.store.base import LANES, OutboxItem
from fhirbridge.values import ResourceVersion

__all__ = [
    "LANES",
    "item_lane",
    "outbox_lane_key",
    "patient_key",
    "reference_lane_key",
    "version_lane",
    "version_lane_key",
]


def version_lane(version: ResourceVersion, lanes: int = LANES) -> int:
    """The lane (``0 .. lanes - 1``) of a version's patient."""
    return version_lane_key(version) % lanes


def item_lane(item: OutboxItem, lanes: int = LANES) -> int:
    """The lane (``0 .. lanes - 1``) of an outbox item's patient."""
    return outbox_lane_key(item) % lanes
