// Clean twin: TrustKit's Swift set-up (README "Getting Started"), with constants of this file.
import UIKit
import TrustKit

private let apiHost = "api.example.com"
private let cdnHost = "cdn.example.com"

struct Pins {
    static let apiLeaf = "harAYqQ/aYiLOgw4VBiN+TbTl3KUbbMYpyBolkLH42U="
    static let apiBackup = "W8ZJg2YSf2gJQSa3s1WpL6cEsXoyoAqLc0Mj6sgIVUE="
}

@main
class AppDelegate: UIResponder, UIApplicationDelegate {
    func application(
        _ application: UIApplication,
        didFinishLaunchingWithOptions launchOptions: [UIApplication.LaunchOptionsKey: Any]?
    ) -> Bool {
        let trustKitConfig = [
            kTSKSwizzleNetworkDelegates: false,
            kTSKPinnedDomains: [
                apiHost: [
                    kTSKEnforcePinning: true,
                    kTSKIncludeSubdomains: true,
                    kTSKExpirationDate: "2030-01-01",
                    kTSKPublicKeyHashes: [
                        Pins.apiLeaf,
                        Pins.apiBackup,
                    ],
                    kTSKDisableDefaultReportUri: true,
                    kTSKReportUris: ["https://reports.example.com/" + "trustkit"],
                ],
                cdnHost: [
                    kTSKEnforcePinning: false,  // report-only while the CDN migrates
                    kTSKPublicKeyHashes: [
                        "gWC/ESy9qxQgna57P23EDMhQVo59PwgrnjAmDxhiACM=",
                        "PKMWxTDCibd2qsPq8cW1ryINtR2/MCig5R2uMLGxiTo=",
                    ],
                    kTSKDisableDefaultReportUri: true,
                ],
            ],
        ] as [String: Any]

        TrustKit.initSharedInstance(withConfiguration: trustKitConfig)
        return true
    }
}
