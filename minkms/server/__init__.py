"""The Twisted shell: TLS listener, HTTP API, AMP peer channel, node driver and service."""
