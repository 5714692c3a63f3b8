"""ctxmeter: real-time context-window and token meters for AI agent sessions, on NATS."""

__version__ = "0.1.0"
