"""Patient lanes: versions that share a resource or a patient, in arrival order.

A batch of versions is split into lanes: two versions are in the same lane when they name
the same resource or the same patient (directly or through a chain of versions), so
evaluating one lane's versions in order reads the journal as of the versions before each
of them, whatever the other lanes do. Lanes run concurrently, at most ``concurrency`` at
once; one lane never runs two versions at a time.

The patient a version is about is the one the journal's lane key names
(:mod:`fhirbridge.store.lanes`): these in-process lanes are finer parts of the lanes workers
lease, so a batch a worker takes from its leased lanes splits into lanes of its own lanes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from fhirbridge.detect import local_reference
from fhirbridge.store.lanes import patient_key
from fhirbridge.values import ResourceVersion

__all__ = ["lane_marks", "lanes", "run_lanes"]

T = TypeVar("T")


def lane_marks(version: ResourceVersion) -> tuple[str, ...]:
    """What ties a version to others: its resource and its patient (the patient of its
    journal lane key, and the ``subject`` or ``for`` the detectors read, when they differ)."""
    if version.resource_type == "Patient":
        return (version.reference,)
    resource = version.resource
    marks = dict.fromkeys(
        (
            version.reference,
            patient_key(version),
            local_reference(resource.get("subject") or resource.get("for")),
        )
    )
    return tuple(mark for mark in marks if mark)


def lanes(versions: Sequence[ResourceVersion]) -> list[list[int]]:
    """Indexes of ``versions`` by lane, each lane in arrival order, lanes by first arrival."""
    parent: dict[str, str] = {}

    def root(mark: str) -> str:
        while parent[mark] != mark:
            parent[mark] = parent[parent[mark]]
            mark = parent[mark]
        return mark

    marks = [lane_marks(v) for v in versions]
    for own in marks:
        for mark in own:
            parent.setdefault(mark, mark)
        first = root(own[0])
        for mark in own[1:]:
            other = root(mark)
            if other != first:
                parent[other] = first
    by_root: dict[str, list[int]] = {}
    for index, own in enumerate(marks):
        by_root.setdefault(root(own[0]), []).append(index)
    return list(by_root.values())


async def run_lanes(
    groups: Sequence[Sequence[int]],
    step: Callable[[int], Awaitable[T]],
    *,
    concurrency: int,
) -> dict[int, T]:
    """``step`` every index, each lane's in order, at most ``concurrency`` lanes at once.

    An exception ``step`` raises cancels the other lanes and propagates (``step`` isolates
    the failures it can).
    """
    results: dict[int, T] = {}
    if len(groups) <= 1 or concurrency <= 1:
        for group in groups:
            for index in group:
                results[index] = await step(index)
        return results
    gate = asyncio.Semaphore(concurrency)

    async def lane(group: Sequence[int]) -> None:
        async with gate:
            for index in group:
                results[index] = await step(index)

    try:
        async with asyncio.TaskGroup() as tasks:
            for group in groups:
                tasks.create_task(lane(group))
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    return results
