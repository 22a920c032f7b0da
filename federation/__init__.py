"""fedgate control plane: the shared routing view, etcd, Vault, discovery, admin API and CLI."""
