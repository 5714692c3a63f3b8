"""ctxmeter's WebSocket edge: relays session events to browsers and serves the HTTP API."""
