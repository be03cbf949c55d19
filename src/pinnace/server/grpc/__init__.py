"""The gRPC transport: inference.GRPCInferenceService over the same data plane."""
