"""Builders and harnesses shared by several test modules (none of them is a test module).

- :mod:`.receiver`: the notification receiver on a memory journal, over ASGI, and the
  notifications it takes;
- :mod:`.hl7`: HL7 v2 messages and a fake FHIR server for the v2 source;
- :mod:`.rules`: a valid rule pack to break;
- :mod:`.sekmet`: what the end-to-end tests read from and write to a sekmet server.
"""
