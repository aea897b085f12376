"""gRPC servicers, interceptors and status mapping."""
