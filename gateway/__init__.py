"""fedgate data plane: the request path."""
