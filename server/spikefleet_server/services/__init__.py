"""gRPC servicers of the server core (converter, registry)."""
