// Clean twin: TrustKit's Objective-C set-up (README "Getting Started"), with file constants.
#import "AppDelegate.h"
#import <TrustKit/TrustKit.h>

#define API_HOST @"api.example.com"
static NSString * const kApiLeaf = @"harAYqQ/aYiLOgw4VBiN+TbTl3KUbbMYpyBolkLH42U=";
static NSString *const kApiBackup = @"W8ZJg2YSf2gJQSa3s1WpL6cEsXoyoAqLc0Mj6sgIVUE=";

@implementation AppDelegate

- (BOOL)application:(UIApplication *)application didFinishLaunchingWithOptions:(NSDictionary *)launchOptions
{
    NSDictionary *trustKitConfig =
    @{
      kTSKSwizzleNetworkDelegates: @NO,
      kTSKPinnedDomains : @{
              API_HOST : @{
                      kTSKExpirationDate: @"2030-01-01",
                      kTSKPublicKeyHashes : @[
                              kApiLeaf,
                              kApiBackup,
                              ],
                      kTSKIncludeSubdomains : @YES,
                      kTSKDisableDefaultReportUri : @YES,
                      },
              @"cdn" @".example.com" : @{
                      kTSKPublicKeyHashes : @[
                              @"gWC/ESy9qxQgna57P23EDMhQVo59PwgrnjAmDxhiACM=",
                              @"PKMWxTDCibd2qsPq8cW1ryINtR2/MCig5R2uMLGxiTo=",
                              ],
                      kTSKEnforcePinning : @NO,
                      kTSKDisableDefaultReportUri : @(YES),
                      },
              }};

    [TrustKit initSharedInstanceWithConfiguration:trustKitConfig];
    return YES;
}

@end
