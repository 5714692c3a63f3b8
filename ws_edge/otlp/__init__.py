"""OpenTelemetry ingest: OTLP/HTTP exports (traces, logs, metrics) turned into meter changes.

``decode`` reads a request body into records, ``mapping`` says which records move a meter and how (pure
rules), ``ingest`` applies a batch's changes through the functions, ``handler`` is the HTTP side."""
