"""fhirbridge.fhir."""
