"""Apple configuration profiles (``.mobileconfig``): anchor distribution for a private PKI.

A profile cannot pin: it installs certificates. This export carries the *CA certificates* a
policy pins (given with ``--cert``, since a policy holds hashes, not certificates), so an MDM can
roll out a private PKI's anchors to managed devices. The pins themselves go into the app's own
configuration (``ats-plist`` or ``trustkit-ios``).

* A self-signed CA becomes a ``com.apple.security.root`` payload, any other CA a
  ``com.apple.security.pkcs1`` payload; each carries the DER certificate.
* ``PayloadUUID`` values are stable: uuid5 of the certificate's SHA-256 fingerprint for a
  certificate payload, and of the identifier plus every fingerprint for the profile, so
  re-exporting the same certificates gives a byte-identical profile. ``PayloadIdentifier``
  (``--identifier``) stays the same across versions, so a new export replaces the installed one.
  The profile's ``PayloadVersion`` is the policy's ``version`` (1 for a policy without one), and
  the import reads it back as the policy version; ``PayloadDescription`` names it too.
* A certificate whose key is not pinned by the policy is refused; a leaf certificate is refused
  (it is not an anchor); a ``ca_pins`` or ``pins`` entry without a matching ``--cert`` is warned
  about (a ``pins`` entry may name a CA).

Import reads the certificate payloads (``.root``, ``.pkcs1`` and ``.pem``, the ones iOS
installs as certificates; a misspelled type is warned about with a "did you mean", other
payloads are named in one warning) and needs ``--domain HOST``: the pins become that host's
``ca_pins`` (a profile names no domains).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from typing import Any

from certpin._errors import CertificateLoadError
from certpin.core.pins import Pin
from certpin.core.policy import Policy
from certpin.formats import _common as common
from certpin.formats._lenient import did_you_mean
from certpin.formats._structured import describe, expect, label, load_plist_file

FMT = "mobileconfig"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "mobileconfig.certpin.invalid")
_ROOT, _PKCS1 = "com.apple.security.root", "com.apple.security.pkcs1"
#: The payloads iOS installs as a certificate: DER root, DER certificate, PEM certificate.
_CERTIFICATE_TYPES = (_ROOT, _PKCS1, "com.apple.security.pem")
#: The import size cap: profiles carry certificates, and MDM profiles bundle other payloads
#: (Wi-Fi, VPN, fonts) the import skips; 8 MiB leaves room for those.
MAX_BYTES = 8 * 1024 * 1024


def _pinned(der: bytes, pins: Iterable[Pin]) -> bool:
    """Does any of `pins` name this certificate? `Pin.matches` is the one comparison (the
    verdict uses it too); exporting a file needs no clock."""
    return any(pin.matches(der) for pin in pins)


def export_mobileconfig(policy: Policy, options: common.ExportOptions) -> common.ExportResult:
    from certpin.core.sources import load_sources

    if not options.certs:
        raise common.FormatError(
            "mobileconfig needs the pinned CA certificates: pass --cert FILE (a policy holds "
            "hashes, not certificates)",
            source=policy.source,
        )
    notes = common.Notes()
    all_pins = tuple(dict.fromkeys(p for r in policy.domains.values() for p in r.all_pins))
    payloads: list[dict[str, Any]] = []
    seen: set[str] = set()
    for der in options.certs:
        try:
            (src,) = load_sources(der, source="--cert")
        except (CertificateLoadError, ValueError) as exc:
            raise common.FormatError(f"not a certificate: {exc}", source="--cert") from None
        fingerprint = hashlib.sha256(src.der).hexdigest()
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        if src.kind != "certificate":
            raise common.FormatError(
                f"{src.kind} given; --cert takes CA certificates", source="--cert"
            )
        if not src.is_ca:
            raise common.FormatError(
                f"{src.subject} is not a CA certificate: a profile distributes anchors, not "
                "leaf certificates",
                source="--cert",
            )
        if not _pinned(src.der, all_pins):
            raise common.FormatError(
                f"{src.subject} ({src.pin}) is not pinned by the policy: refusing to distribute "
                "an anchor the policy does not name",
                source="--cert",
            )
        self_signed = src.subject == src.issuer
        payloads.append(
            {
                "PayloadType": _ROOT if self_signed else _PKCS1,
                "PayloadVersion": 1,
                "PayloadIdentifier": f"{options.identifier}.{fingerprint[:16]}",
                "PayloadUUID": str(uuid.uuid5(_NAMESPACE, fingerprint)).upper(),
                "PayloadDisplayName": common.comment_safe(src.subject or fingerprint),
                "PayloadDescription": f"SPKI pin {src.pin}",
                "PayloadCertificateFileName": f"{fingerprint[:16]}.cer",
                "PayloadContent": src.der,
            }
        )
    for rule in policy.domains.values():
        # `pins` may name a CA as well as a leaf: a pin there without a --cert may be a CA the
        # profile leaves out, so it is reported too (leaf_pins never name an anchor).
        for slot, pins in (("ca_pins", rule.ca_pins), ("pins", rule.pins)):
            for pin in pins:
                if not any(_pinned(p["PayloadContent"], (pin,)) for p in payloads):
                    what = "CA pin" if slot == "ca_pins" else "pin (in `pins`)"
                    maybe = "" if slot == "ca_pins" else " if it names a CA, "
                    notes.warn(
                        rule.pattern,
                        f"{what} {pin} has no --cert:{maybe or ' '}its certificate is not in "
                        "the profile",
                    )
    fingerprints = sorted(seen)
    version = "" if policy.version is None else f" (policy version {policy.version})"
    doc = {
        "PayloadType": "Configuration",
        # The policy version (1 without one): an MDM sees which pin-set version a device has.
        "PayloadVersion": 1 if policy.version is None else policy.version,
        "PayloadIdentifier": options.identifier,
        "PayloadUUID": str(
            uuid.uuid5(_NAMESPACE, options.identifier + ":" + ",".join(fingerprints))
        ).upper(),
        "PayloadDisplayName": "Pinned CA certificates",
        "PayloadDescription": (
            f"CA certificates pinned by {common.comment_safe(policy.source)}{version}. Anchor "
            "distribution only: the pins themselves are in the app's configuration."
        ),
        "PayloadContent": payloads,
    }
    return notes.result(common.dump_plist(doc, common.header_lines(policy, FMT)))


def import_mobileconfig(
    data: bytes, source: str, options: common.ImportOptions
) -> common.ImportResult:
    from certpin.core.sources import load_sources

    notes = common.Notes()
    root = load_plist_file(data, source, MAX_BYTES, notes)
    items = expect(root.get("PayloadContent", []), list, source, "PayloadContent")
    pins: dict[str, None] = {}  # ordered, and a membership test that does not scan a list
    skipped: dict[str, None] = {}
    for i, item in enumerate(items):
        where = f"PayloadContent[{i}]"
        expect(item, dict, source, where)
        kind = expect(item.get("PayloadType", ""), str, source, f"{where}.PayloadType")
        if kind not in _CERTIFICATE_TYPES:
            dym = did_you_mean(kind, _CERTIFICATE_TYPES)
            if dym:
                notes.warn(
                    f"{where}.PayloadType",
                    f"unknown payload type {common.clip(kind)}{dym}: iOS does not install it "
                    "as a certificate, so it is not imported",
                )
            else:
                skipped.setdefault(label(kind))
            continue
        der = expect(item.get("PayloadContent"), bytes, source, f"{where}.PayloadContent")
        # (a .pem payload holds the PEM text as data: load_sources reads either encoding)
        try:
            found = load_sources(der, source=f"{source}: {where}")
        except Exception as exc:
            # load_sources documents CertificateLoadError, but cryptography raises others on
            # hostile DER (x509.InvalidVersion from a version field of 5, seen by the fuzz
            # tests): whatever it is, this payload is not a certificate, and that is an error
            # of this file.
            problem = common.clip_message(str(exc)) or type(exc).__name__
            raise common.FormatError(
                f"not a certificate: {problem}", source=source, location=where
            ) from None
        if len(found) != 1 or found[0].kind != "certificate":
            raise common.FormatError(
                f"{kind} payload must hold one DER certificate", source=source, location=where
            )
        pins.setdefault(str(found[0].pin))
    if skipped:
        notes.warn(
            source,
            f"{len(skipped)} other payload type(s) skipped, they carry no certificate: "
            + common.clip_message(", ".join(skipped)),
        )
    if not pins:
        raise common.FormatError(
            "no com.apple.security.root, .pkcs1 or .pem certificate payload", source=source
        )
    if not options.domain:
        raise common.FormatError(
            f"a configuration profile holds {len(pins)} certificate(s) but names no domain: "
            "pass --domain HOST to pin them as that host's ca_pins",
            source=source,
        )
    host = common.check_host(options.domain, source, "--domain")
    version = root.get("PayloadVersion")
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 0
    ):
        raise common.FormatError(
            f"must be a non-negative integer, got {describe(version)}",
            source=source,
            location="PayloadVersion",
        )
    return common.build_policy({host: {"ca_pins": list(pins)}}, source, notes, version)
