"""ctxmeter's NATS functions: token counting and per-session context state."""
