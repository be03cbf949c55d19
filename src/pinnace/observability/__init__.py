"""Metrics, logs and traces: handed into the server and the gateway, never imported globally."""
