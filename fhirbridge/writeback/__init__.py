"""fhirbridge.writeback."""
