"""Pin-failure reports (RFC 7469 / TrustKit) sent from clients."""
