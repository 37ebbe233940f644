"""Runtime: listeners, original destination, sniffing, upstream connectors, relay, CLI."""
