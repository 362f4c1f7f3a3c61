"""The harness's errors: one root, :class:`SekmetError`, and two kinds of failure under it."""

from __future__ import annotations

from fhirbridge.errors import FhirBridgeError


class SekmetError(FhirBridgeError, RuntimeError):
    """The sekmet test server misbehaved or a request to it failed."""


class SekmetStartError(SekmetError):
    """The sekmet server did not become ready; the message ends with the tail of its log."""


class SekmetWorkflowError(SekmetError):
    """A sekmet workflow failed; the message carries sekmet's own reason."""
