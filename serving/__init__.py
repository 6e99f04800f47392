"""The service side: scoring core, protocol adapters, route table, the model's served forms; no MLflow or training code."""
