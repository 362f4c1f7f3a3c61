"""One error root: every exception class the package defines derives from FhirBridgeError,
so `except FhirBridgeError` catches whatever fhirbridge raises."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import fhirbridge
from fhirbridge.errors import FhirBridgeError

#: Control-flow signals that never leave the module that raises them (each is caught there).
INTERNAL = {
    "fhirbridge.fhir.retry.RetrySignal",  # raised and caught inside FhirClient's retry loop
}


def package_modules() -> list[str]:
    """Every module of the package."""
    return [
        info.name
        for info in pkgutil.walk_packages(fhirbridge.__path__, prefix="fhirbridge.")
        if not info.name.endswith("__main__")
    ]


def test_every_exception_class_derives_from_the_root() -> None:
    """Each public exception class defined in fhirbridge (control-flow signals aside) is a
    FhirBridgeError; private ones are caught in the module that defines them."""
    strays = []
    for name in package_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if not (inspect.isclass(value) and issubclass(value, BaseException)):
                continue
            if value.__module__ != name or attr.startswith("_"):
                continue
            qualified = f"{name}.{attr}"
            if qualified not in INTERNAL and not issubclass(value, FhirBridgeError):
                strays.append(qualified)
    assert strays == []
