"""fhirbridge.testing."""
