"""Monitoring tools outside the service: Prometheus for local replicas, pictures from its range queries."""
