"""ctxmeter's message contract: pydantic models, subjects and the exported JSON Schema."""
