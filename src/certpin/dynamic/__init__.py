"""Dynamic pinning: signed pin bundles, `DynamicPolicy`, trust on first use, signing.

Client side::

    import certpin, certpin.dynamic
    policy = certpin.dynamic.DynamicPolicy(
        "https://pins.example.net/app.jws",
        trusted_keys=["bundle-key.pub.pem"],
        cache_dir="~/.cache/myapp/pins",
        fallback=certpin.Policy.from_file("pins.toml"),
    ).start()
    ctx = certpin.create_default_context(policy)

Publisher side: `sign_bundle` with a `Signer` (`FileSigner`, or an HSM/KMS behind the same
three members); `verify_bundle` checks a token as a client would. `KnownPins` is trust on first
use. The modules: `jws` (the JWS verifier and signers), `bundle` (the bundle format),
`provider` (`DynamicPolicy`), `compose` (union after expiry, kill switch, cohorts), `state`
(the client's cache), `tofu`, `serve` and `files` (serving bundle files).
"""

from certpin.dynamic.bundle import Bundle, sign_bundle, verify_bundle
from certpin.dynamic.jws import BundleError, FileSigner, Signer, TrustedKey
from certpin.dynamic.provider import DynamicPolicy, RefreshResult
from certpin.dynamic.tofu import KnownPins

__all__ = [
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
]
