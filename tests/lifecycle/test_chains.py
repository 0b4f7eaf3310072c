"""certpin.lifecycle.chains: what a pin names, for spare keys and CSRs (no certificate, no
verdict)."""

from __future__ import annotations

import datetime as dt

import pytest

from _support.pki import PKI
from certpin import Pin
from certpin.lifecycle.chains import identify_spare, load_spares, names_key
from certpin.lifecycle.keygen import generate

NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("file", ["key.pem", "csr.pem"])
def test_a_spare_key_is_named_by_its_pin_in_every_algorithm(tmp_path, algorithm, file):
    generate(tmp_path, "p256")
    (spare,) = load_spares([str(tmp_path / file)])
    pin = Pin.for_spki(spare.spki, algorithm)
    assert names_key(pin, spare.spki)
    assert identify_spare(pin, [spare], NOW) is spare
    # Twins: another key's pin, and the certificate-fingerprint of nothing, name nothing.
    other = Pin.for_spki(spare.spki + b"x", algorithm)
    assert not names_key(other, spare.spki)
    assert identify_spare(other, [spare], NOW) is None
    fingerprint = Pin.certificate_fingerprint(spare.spki, algorithm)
    assert not names_key(fingerprint, spare.spki)


def test_a_spare_certificate_is_named_through_the_verdict(pki: PKI, tmp_path):
    path = tmp_path / "leaf.pem"
    path.write_bytes(pki.leaf.pem())
    (spare,) = load_spares([str(path)])
    assert identify_spare(Pin.for_certificate(pki.leaf.der(), "sha512"), [spare], NOW) is spare
    assert identify_spare(Pin.for_certificate(pki.root.der()), [spare], NOW) is None
