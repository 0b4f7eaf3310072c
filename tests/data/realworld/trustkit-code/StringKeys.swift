// Clean twin: the key strings written out instead of TrustKit's kTSK constants.
import TrustKit

let config: [String: Any] = [
    "TSKPinnedDomains": [
        "www.example.org": [
            "TSKPublicKeyHashes": [
                "c4J2R6cEjsCwTnYsrAsoitKyElryC/26teELmnbzj80=",
                "qdI98SSPA0QoZX91WCTXWgwtnNwaKfRdXwNfvw404iU=",
            ],
            "TSKDisableDefaultReportUri": true,
        ]
    ]
]

func startPinning() {
    TrustKit.initSharedInstance(withConfiguration: config)
}
