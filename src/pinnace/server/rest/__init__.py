"""The REST transport: raw ASGI apps for the data and management listeners."""
