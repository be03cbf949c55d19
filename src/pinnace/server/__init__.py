"""The model server: REST and gRPC transports over one data plane, and their wiring."""
