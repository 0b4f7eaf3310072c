"""The public API: a curated, sorted ``__all__`` that fails loudly when it drifts."""

from __future__ import annotations

import importlib
import ssl
import subprocess
import sys

import pytest

import certpin

# Adding or removing a public name is an API change: update this set, the docs and CHANGELOG.md.
EXPECTED_PUBLIC_NAMES = {
    "Reporter",
    "ReporterStats",
    "reporting_hook",
    "Bundle",
    "BundleError",
    "CertificateLoadError",
    "CertpinError",
    "ChainEntry",
    "ConfigurationError",
    "DomainRule",
    "DynamicPolicy",
    "FileSigner",
    "InsecureContextError",
    "KillSwitch",
    "KnownPins",
    "Pin",
    "PinFailure",
    "PinFormatError",
    "PinKind",
    "PinValidationError",
    "PinningContext",
    "Policy",
    "PolicyError",
    "PolicyProvider",
    "RefreshResult",
    "Signer",
    "TrustedKey",
    "Verdict",
    "VerdictStatus",
    "__version__",
    "create_default_context",
    "normalize_host",
    "sign_bundle",
    "verdict",
    "verify_bundle",
}


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
