"""One error tree: every exception certpin defines is a CertpinError (docs: certpin._errors)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import ssl

import certpin
from certpin import _errors


def _certpin_modules() -> list[str]:
    names = [certpin.__name__]
    for info in pkgutil.walk_packages(certpin.__path__, prefix="certpin."):
        names.append(info.name)
    return names


def _defined_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _certpin_modules():
        if name == "certpin.__main__":
            continue  # running it would start the CLI
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                found[f"{name}.{attr}"] = value
    return found


def test_every_exception_certpin_defines_is_a_certpin_error() -> None:
    found = _defined_exceptions()
    assert len(found) >= 15  # the walk really saw the tree (it has more than a dozen classes)
    strays = sorted(
        name for name, cls in found.items() if not issubclass(cls, certpin.CertpinError)
    )
    assert strays == []


def test_the_walk_sees_every_layer() -> None:
    # The walk must reach the errors defined deep in the layers, or the check above proves
    # nothing about them.
    found = _defined_exceptions()
    for name in (
        "certpin.core.hosts.HostError",
        "certpin.core.der.DERError",
        "certpin.tls.fetch.ConnectError",
        "certpin.dynamic.jws.BundleError",
        "certpin.formats._common.FormatError",
        "certpin.collector.store.database.StoreError",
        "certpin.collector._writer.Overloaded",
    ):
        assert name in found


def test_configuration_errors_are_value_errors() -> None:
    for cls in _defined_exceptions().values():
        if issubclass(cls, certpin.ConfigurationError):
            assert issubclass(cls, ValueError), cls


def test_pin_validation_error_stays_an_ssl_certificate_error() -> None:
    assert issubclass(certpin.PinValidationError, ssl.SSLCertVerificationError)
    assert issubclass(certpin.PinValidationError, ssl.SSLError)


def test_every_defined_exception_is_drawn_in_the_tree() -> None:
    doc = _errors.__doc__ or ""
    missing = sorted(
        cls.__name__
        for cls in _defined_exceptions().values()
        if not cls.__name__.startswith("_") and cls.__name__ not in doc
    )
    assert missing == []
