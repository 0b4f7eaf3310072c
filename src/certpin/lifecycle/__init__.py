"""Managing pins over time: chains, lint, rotation plans, inventory, key generation, monitor."""
