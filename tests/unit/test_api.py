"""The public API: a curated, sorted ``__all__`` that fails loudly when it drifts."""

from __future__ import annotations

import importlib
import ssl
import subprocess
import sys

import pytest

import certpin

# Adding or removing a public name is an API change: update these sets, the docs and CHANGELOG.md.
EXPECTED_PUBLIC_NAMES = {
    "CertificateLoadError",
    "CertpinError",
    "ChainEntry",
    "ConfigurationError",
    "DomainRule",
    "HostPattern",
    "InsecureContextError",
    "KillSwitch",
    "Pin",
    "PinFailure",
    "PinFormatError",
    "PinKind",
    "PinValidationError",
    "PinningContext",
    "Policy",
    "PolicyError",
    "PolicyProvider",
    "Verdict",
    "VerdictStatus",
    "__version__",
    "create_default_context",
    "extract_from_ssl",
    "inject_into_ssl",
    "normalize_host",
    "verdict",
}
SUBPACKAGE_NAMES = {
    "certpin.dynamic": {
        "Bundle",
        "BundleError",
        "DynamicPolicy",
        "FileSigner",
        "KnownPins",
        "RefreshResult",
        "Signer",
        "TrustedKey",
        "sign_bundle",
        "verify_bundle",
    },
    "certpin.reporting": {"Reporter", "ReporterStats", "reporting_hook"},
}
#: The names that left the top level for a subpackage: they keep working for one release.
MOVED = {name: module for module, names in SUBPACKAGE_NAMES.items() for name in names}


def test_all_is_sorted() -> None:
    assert certpin.__all__ == sorted(certpin.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(certpin.__all__) == len(set(certpin.__all__))


def test_all_matches_expected_names() -> None:
    assert set(certpin.__all__) == EXPECTED_PUBLIC_NAMES


def test_no_undeclared_public_names() -> None:
    public = {
        name
        for name, value in vars(certpin).items()
        if not name.startswith("_") and not isinstance(value, type(certpin))  # skip submodules
    }
    assert public <= set(certpin.__all__)


@pytest.mark.parametrize("name", sorted(EXPECTED_PUBLIC_NAMES))
def test_every_name_importable(name: str) -> None:
    module = importlib.import_module("certpin")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from certpin import {name}", namespace)
    assert namespace[name] is getattr(certpin, name)


@pytest.mark.parametrize("module", sorted(SUBPACKAGE_NAMES))
def test_subpackage_all_is_sorted_and_exact(module: str) -> None:
    package = importlib.import_module(module)
    assert package.__all__ == sorted(package.__all__)
    assert set(package.__all__) == SUBPACKAGE_NAMES[module]
    namespace: dict[str, object] = {}
    exec(f"from {module} import *", namespace)
    assert set(namespace) - {"__builtins__"} == SUBPACKAGE_NAMES[module]


@pytest.mark.parametrize("name", sorted(MOVED))
def test_moved_name_still_works_and_warns(name: str) -> None:
    new = getattr(importlib.import_module(MOVED[name]), name)
    with pytest.warns(DeprecationWarning, match=rf"use {MOVED[name]}\.{name}\b"):
        old = getattr(certpin, name)
    assert old is new
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match=rf"certpin\.{name} is deprecated"):
        exec(f"from certpin import {name}", namespace)
    assert namespace[name] is new


def test_moved_names_are_not_public_at_the_top_level() -> None:
    assert not set(MOVED) & set(certpin.__all__)
    assert not set(MOVED) & set(vars(certpin))  # never cached: every use warns


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'DynamicPolicies'"):
        certpin.DynamicPolicies  # noqa: B018


def test_import_certpin_loads_neither_dynamic_pinning_nor_reporting() -> None:
    # `import certpin` stays fast for static policies (bench/cli_cold_start.py): the bundle
    # machinery, the reporter and their HTTP client load only when used. A fresh interpreter.
    heavy = ("certpin.dynamic", "certpin.reporting", "certpin._io.http", "urllib.request")
    code = f"import sys, certpin; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_is_a_string() -> None:
    assert isinstance(certpin.__version__, str) and certpin.__version__


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from certpin import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(certpin.__all__)


def test_error_tree() -> None:
    assert issubclass(certpin.PinValidationError, ssl.SSLCertVerificationError)
    assert issubclass(certpin.PinValidationError, ssl.SSLError)
    assert issubclass(certpin.PinValidationError, certpin.CertpinError)
    assert not issubclass(certpin.PinValidationError, certpin.ConfigurationError)
    for cls in (
        certpin.ConfigurationError,
        certpin.PolicyError,
        certpin.PinFormatError,
        certpin.CertificateLoadError,
        certpin.InsecureContextError,
    ):
        assert issubclass(cls, ValueError), cls
        assert issubclass(cls, certpin.CertpinError), cls
    for cls in (certpin.PolicyError, certpin.PinFormatError):
        assert issubclass(cls, certpin.ConfigurationError)


def test_pin_validation_error_attributes() -> None:
    err = certpin.PinValidationError("pin mismatch for a.example")
    assert str(err) == "pin mismatch for a.example"
    assert err.verdict is None
    assert err.reason == "PIN_VALIDATION_FAILED"
    assert err.verify_message == "pin mismatch for a.example"
    assert err.verify_code == 50  # X509_V_ERR_APPLICATION_VERIFICATION
    with pytest.raises(ssl.SSLError):
        raise err


def test_core_imports_nothing_optional() -> None:
    # The core must import without the optional integrations (STYLE.md §1). A fresh interpreter,
    # because other tests may already have imported them into this one.
    optional = ("requests", "urllib3", "httpx", "aiohttp", "click", "rich", "trustme")
    code = f"import sys, certpin; print([m for m in {optional!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
