"""Dynamic pinning: JWS verification, signed bundles, `DynamicPolicy`, trust on first use,
bundle signing and serving."""
