"""The service side: scoring core, protocol adapters, route table, served forms; no MLflow or training code."""
