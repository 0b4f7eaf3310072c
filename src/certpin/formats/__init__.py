"""Export certpin policies to mobile, HTTP-client and MDM formats, and import them back.

``FORMATS`` maps each format name to a `Format` with an ``export(policy, options)``, an
``import_(data, source, options)`` and ``max_bytes``, the size cap of an imported file. Both
functions return the result together with ``warnings``: what the target cannot express
(export) or what had to be translated (import). Nothing is dropped silently. An importer raises
only `FormatError` (naming the file and where in it), whatever the input. See docs/formats.md
for the mapping tables and the bounds on imported files.

    >>> from certpin.formats import FORMATS, ExportOptions
    >>> result = FORMATS["android-nsc"].export(policy, ExportOptions())  # doctest: +SKIP
    >>> result.text, result.warnings                                     # doctest: +SKIP
"""

from __future__ import annotations

from certpin.formats import (
    _ats,
    _curl,
    _hpkp,
    _mobileconfig,
    _nsc,
    _okhttp,
    _trustkit,
    _trustkit_code,
)
from certpin.formats._ats import export_ats, import_ats
from certpin.formats._common import (
    ExportOptions,
    ExportResult,
    Format,
    FormatError,
    ImportOptions,
    ImportResult,
)
from certpin.formats._curl import export_curl, import_curl
from certpin.formats._detect import detect
from certpin.formats._hpkp import export_hpkp, import_hpkp
from certpin.formats._mobileconfig import export_mobileconfig, import_mobileconfig
from certpin.formats._nsc import export_nsc, export_trustkit_android, import_nsc
from certpin.formats._okhttp import export_java, export_kotlin, import_okhttp
from certpin.formats._trustkit import export_trustkit_ios, import_trustkit_ios
from certpin.formats._trustkit_code import export_trustkit_code, import_trustkit_code

__all__ = [
    "FORMATS",
    "ExportOptions",
    "ExportResult",
    "Format",
    "FormatError",
    "ImportOptions",
    "ImportResult",
    "detect",
]

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "android-nsc",
            "Android Network Security Config XML (<pin-set>)",
            export_nsc,
            import_nsc,
            _nsc.MAX_BYTES,
        ),
        Format(
            "ats-plist",
            "Apple ATS NSPinnedDomains (Info.plist)",
            export_ats,
            import_ats,
            _ats.MAX_BYTES,
        ),
        Format(
            "trustkit-ios",
            "TrustKit iOS/macOS TSKConfiguration (Info.plist)",
            export_trustkit_ios,
            import_trustkit_ios,
            _trustkit.MAX_BYTES,
        ),
        Format(
            "trustkit-ios-code",
            "TrustKit iOS/macOS TSKConfiguration in Swift or Objective-C code (export: Swift)",
            export_trustkit_code,
            import_trustkit_code,
            _trustkit_code.MAX_BYTES,
        ),
        Format(
            "trustkit-android",
            "TrustKit Android (Network Security Config + <trustkit-config>)",
            export_trustkit_android,
            import_nsc,
            _nsc.MAX_BYTES,
        ),
        Format(
            "okhttp-kotlin",
            "OkHttp CertificatePinner (Kotlin)",
            export_kotlin,
            import_okhttp,
            _okhttp.MAX_BYTES,
        ),
        Format(
            "okhttp-java",
            "OkHttp CertificatePinner (Java)",
            export_java,
            import_okhttp,
            _okhttp.MAX_BYTES,
        ),
        Format(
            "curl",
            "curl --pinnedpubkey shell commands",
            export_curl,
            import_curl,
            _curl.MAX_BYTES,
        ),
        Format(
            "hpkp",
            "HPKP Public-Key-Pins headers (deprecated)",
            export_hpkp,
            import_hpkp,
            _hpkp.MAX_BYTES,
        ),
        Format(
            "mobileconfig",
            "Apple configuration profile carrying the pinned CA certificates",
            export_mobileconfig,
            import_mobileconfig,
            _mobileconfig.MAX_BYTES,
        ),
    )
}
