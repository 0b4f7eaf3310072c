// Values TrustKit only sees at run time, beside values certpin can resolve.
import TrustKit

let backupPin = "W8ZJg2YSf2gJQSa3s1WpL6cEsXoyoAqLc0Mj6sgIVUE="
let stagingHost = Bundle.main.object(forInfoDictionaryKey: "StagingHost") as! String

func configure(remotePin: String) {
    let trustKitConfig: [String: Any] = [
        kTSKPinnedDomains: [
            "api.example.com": [
                kTSKPublicKeyHashes: [
                    "harAYqQ/aYiLOgw4VBiN+TbTl3KUbbMYpyBolkLH42U=",
                    backupPin,
                    remotePin,
                ],
                kTSKEnforcePinning: ProcessInfo.processInfo.environment["ENFORCE"] != nil,
                kTSKDisableDefaultReportUri: true,
            ],
            stagingHost: [
                kTSKPublicKeyHashes: ["gWC/ESy9qxQgna57P23EDMhQVo59PwgrnjAmDxhiACM=", backupPin],
            ],
            "cdn.example.com": [
                kTSKPublicKeyHashes: ["\(remotePin)", "PKMWxTDCibd2qsPq8cW1ryINtR2/MCig5R2uMLGxiTo="],
                kTSKDisableDefaultReportUri: true,
            ],
        ],
    ]
    TrustKit.initSharedInstance(withConfiguration: trustKitConfig)
}
