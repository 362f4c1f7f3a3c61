"""The long hostile-input run: many thousands of requests to the receiver app, cheaply.

Hypothesis spends most of an example's time on its own bookkeeping; for a run of 100,000
requests this script draws the same kinds of hostile input (tests/fuzz/_strategies.py:
valid notifications of every style with parts replaced by garbage, unstorable escapes,
depth bombs, random and truncated bytes, wrong methods, paths, ids, credentials and media
types) with a seeded ``random.Random``, and every tenth request is a valid notification of a
fresh Encounter. The app runs in process on a SQLite journal, as in the fuzz tests. At the
end it checks that every valid notification was acknowledged, journalled and processed, and
prints the tally; the exit status is 1 if any request got a 5xx or a bare refusal.

    .venv/bin/python -m tests.fuzz.long_run --requests 100000 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import structlog

from fhirbridge.clock import FixedClock
from fhirbridge.config import load_config
from fhirbridge.engine import Bridge
from fhirbridge.receiver import Receiver, create_app
from fhirbridge.store import SqliteStore
from tests._builders.receiver import AUTH, BASE, NOW, SECRET
from tests.fuzz._strategies import FHIR_KEYS, POISON, is_outcome, templates, valid

SCALARS: list[Any] = [None, True, False, 0, -1, 2**70, 1.5, "", "x", "Encounter", "../x", [], {}]


def garbage(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, small."""
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return rng.choice(SCALARS)
    if roll < 0.75:
        return [garbage(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = [rng.choice(FHIR_KEYS) for _ in range(rng.randint(0, 3))]
    return {key: garbage(rng, depth + 1) for key in keys}


def mutate(rng: random.Random, body: Any) -> Any:
    """``body`` with one to three places replaced by garbage or deleted."""
    result = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        parent, key = None, None
        node = result
        while isinstance(node, dict | list) and node and rng.random() < 0.8:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            parent, node = node, node[key]
        if parent is None:
            return garbage(rng)
        if isinstance(parent, dict) and rng.random() < 0.3:
            del parent[key]
        else:
            parent[key] = garbage(rng)  # type: ignore[index]
    return result


def hostile(
    rng: random.Random, bodies: list[tuple[str, Any]]
) -> tuple[str, str, bytes, dict[str, str]]:
    """One hostile request: ``(method, path, body, headers)``."""
    path, template = rng.choice(bodies)
    kind = rng.random()
    if kind < 0.45:
        body = json.dumps(mutate(rng, template)).encode()
    elif kind < 0.6:
        text = json.dumps(template)
        quotes = [i for i, c in enumerate(text) if c == '"'][1::2]
        at = rng.choice(quotes)
        body = (text[:at] + rng.choice(POISON) + text[at:]).encode()
    elif kind < 0.7:
        depth = rng.choice([65, 100, 1000, 5000, 100_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        body = (opener * depth + "1" + closer * depth).encode()
    elif kind < 0.8:
        body = rng.randbytes(rng.randint(0, 64))
    elif kind < 0.9:
        body = json.dumps(garbage(rng)).encode()
    else:
        text = json.dumps(template).encode()
        body = text[: rng.randrange(max(1, len(text)))]
    method = "PUT" if path.count("/") == 3 else "POST"
    headers = dict(AUTH)
    twist = rng.random()
    if twist < 0.05:
        method = rng.choice(["GET", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    elif twist < 0.10:
        path = rng.choice(["/", "/notify/", "/notify/x", "/notify/a/b/c", "/metrics/x", "/%00"])
    elif twist < 0.15:
        headers = rng.choice([{}, {"Authorization": "Bearer x"}, {"X-Fhirbridge-Secret": ""}])
    elif twist < 0.20:
        headers["Content-Type"] = rng.choice(["text/plain", "application/fhir+xml", "x"])
    elif twist < 0.25:
        method, path = "PUT", "/notify/" + "".join(rng.choices("Ea./%-_ 1", k=rng.randint(1, 12)))
    return method, path, body, headers


async def run(requests: int, seed: int, folder: Path) -> Counter[str]:
    """Send the requests; the tally."""
    rng = random.Random(seed)
    store = SqliteStore(folder / "journal.db")
    store.migrate()
    config = load_config(data={"fhir": {"base_url": BASE, "name": "ehr"}}, environ={})
    bridge = Bridge(config, client=None, store=store, clock=FixedClock(NOW))
    bridge.writer = None
    app = create_app(bridge, secret=SECRET, max_body=200_000, gap_grace=0)
    receiver: Receiver = app.state.receiver
    tally: Counter[str] = Counter({"5xx": 0, "bare refusals": 0})
    expected: list[str] = []
    bodies = templates()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://receiver"
        ) as http,
    ):
        for n in range(requests):
            if n % 10 == 9:
                method, path, body, rid = valid(rng.choice(["put", "post", "topic", "message"]))
                answer = await http.request(method, path, content=body, headers=AUTH)
                tally["valid notifications"] += 1
                tally["valid notifications not acknowledged"] += answer.status_code != 200
                expected.append(rid)
                continue
            method, path, body, headers = hostile(rng, bodies)
            answer = await http.request(method, path, content=body, headers=headers)
            tally["hostile requests"] += 1
            tally[f"hostile: {answer.status_code}"] += 1
            tally["5xx"] += answer.status_code >= 500
            if method == "HEAD":  # no body by definition: the media type says what it would be
                fhir = answer.headers.get("content-type", "").startswith("application/fhir+json")
                bare = answer.status_code >= 400 and not fhir
            else:
                bare = answer.status_code >= 400 and not is_outcome(answer)
            if bare:
                tally["bare refusals"] += 1
                if tally["bare refusals"] <= 5:
                    print(f"bare: {method} {path} -> {answer.status_code} {answer.text[:80]!r}")
        await receiver.settle(within=600)
    tally["valid notifications not journalled"] = sum(
        store.snapshot("ehr", "Encounter", rid) is None for rid in expected
    )
    tally["versions left pending"] = len(store.pending(1_000_000))
    tally["dead letters"] = len(store.dead_letters())
    store.close()
    return tally


def main() -> int:
    """Parse the options, run, print the tally."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tally = asyncio.run(run(options.requests, options.seed, Path(folder)))
    tally["seconds"] = round(time.perf_counter() - started)
    for key, count in sorted(tally.items()):
        print(f"{key}: {count}")
    bad = (
        "5xx",
        "bare refusals",
        "valid notifications not acknowledged",
        "valid notifications not journalled",
        "versions left pending",
    )
    return 1 if any(tally[key] for key in bad) else 0


if __name__ == "__main__":
    sys.exit(main())
