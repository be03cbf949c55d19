"""The transport-free hot path: validation, the data plane and the adaptive batcher."""
