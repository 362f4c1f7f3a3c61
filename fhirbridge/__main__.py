"""``python -m fhirbridge``."""

from fhirbridge.cli import main

main()
