"""Open Inference Protocol (KServe V2) types and tensor codecs; pure data, no transport."""
