"""The agent's local inference API (gRPC): Stream, StreamEvents, Infer, Status."""
