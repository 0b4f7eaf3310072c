// Nothing here can be known without running the app: the import fails (exit 2).
#import <TrustKit/TrustKit.h>

void StartPinning(NSString *host, NSArray<NSString *> *pins) {
    NSDictionary *config = @{
        kTSKPinnedDomains : @{
            host : @{ kTSKPublicKeyHashes : pins, kTSKDisableDefaultReportUri : @YES },
            [Settings pinnedHost] : @{ kTSKPublicKeyHashes : [Settings pins] },
        },
    };
    [TrustKit initSharedInstanceWithConfiguration:config];
}
