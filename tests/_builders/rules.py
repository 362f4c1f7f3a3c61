"""A valid rule pack, for tests that break it one key at a time."""

from __future__ import annotations

GOOD = """\
version: 1
codes:
  c1: {display: One}
rules:
  - id: discharge-home
    when:
      kind: discharge
      disposition_group: community
    then:
      - create-task: {id: a, code: c1, due: {days: 1}}
"""
