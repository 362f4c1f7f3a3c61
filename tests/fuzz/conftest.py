"""Hypothesis settings for the fuzz suite, and the tally of what it sent.

Runs are derandomized (the same inputs every run, no example database), so CI is repeatable.
``FHIRBRIDGE_FUZZ_EXAMPLES=N`` raises every fuzz test's example count to N (the documented
long run in tests/fuzz/README.md; ``FHIRBRIDGE_FUZZ_SEEDED=1`` with ``--hypothesis-seed=S``
lets several processes share it, each drawing other inputs). The tally of hostile inputs,
5xx answers and bare refusals is printed at the end of the session.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz._tally import TALLY

settings.register_profile(
    "fhirbridge-fuzz",
    # a long run split over processes gives each its own --hypothesis-seed
    derandomize="FHIRBRIDGE_FUZZ_SEEDED" not in os.environ,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)
settings.load_profile("fhirbridge-fuzz")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the tally when the fuzz tests sent anything."""
    if TALLY:
        terminalreporter.write_sep("-", "fuzz tally")
        for key, count in sorted(TALLY.items()):
            terminalreporter.write_line(f"{key}: {count}")
