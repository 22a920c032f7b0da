"""Real etcd servers for the tests (the implementation is shared with ``fedgate demo``)."""

from federation.devstack.etcd import EtcdCluster, EtcdMember, etcd_binary

__all__ = ["EtcdCluster", "EtcdMember", "etcd_binary"]
