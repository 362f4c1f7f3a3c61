"""fhirbridge.sources."""
