"""etcd users and roles of least privilege, from the key layout's writer table.

:data:`federation.keys.WRITERS` says which process writes each kind of key. This module
turns it into etcd roles and reconciles etcd with them (:func:`bootstrap`), idempotently:
a second run changes nothing, a run after a new kind was added grants only that.

=====================================  ==========================================
role (= user)                          may
=====================================  ==========================================
``fedgate-operator``                   read the prefix; write the config keys
``fedgate-gateway-{cluster}``          read the prefix; write its cluster's gateway
                                       records, endpoints and health (reports, the
                                       leader lock and the summary), ACME orders
``fedgate-discovery-{cluster}``        read the prefix; write its cluster's endpoints
``root``                               everything (etcd's own; bootstrap only)
=====================================  ==========================================

With client certificates (``--client-cert-auth``) etcd takes the certificate's Common
Name as the user, so a certificate issued for ``fedgate-gateway-aws-eu`` *is* that
role; users are then created without a password. With passwords, each user's password
is generated once and written to ``{passwords_dir}/{user}.password`` (mode 0600);
deleting the file and running again rotates that password.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aetcd.rpc as rpc

from federation.etcd import EtcdClient, EtcdError
from federation.keys import KeyLayout, Writer, grants_of, range_end, role_name

__all__ = ["RoleSpec", "bootstrap", "desired_roles", "role_name"]

ROOT = "root"
_READ = "READ"
_READWRITE = "READWRITE"


@dataclass(frozen=True, slots=True)
class RoleSpec:
    name: str
    # (permission type, key, range end) with range end b"" for one key
    permissions: frozenset[tuple[str, bytes, bytes]]


def _perms(layout: KeyLayout, writer: Writer, cluster: str | None) -> RoleSpec:
    prefix = layout.prefix_bytes
    perms = {(_READ, prefix, range_end(prefix))}
    for grant in grants_of(writer):
        key, is_prefix = grant.key_range(layout.prefix, cluster)
        k = key.encode()
        perms.add((_READWRITE, k, range_end(k) if is_prefix else b""))
    return RoleSpec(role_name(writer, cluster), frozenset(perms))


def desired_roles(layout: KeyLayout, clusters: list[str]) -> list[RoleSpec]:
    roles = [_perms(layout, Writer.OPERATOR, None)]
    for cluster in sorted(set(clusters)):
        roles.append(_perms(layout, Writer.GATEWAY, cluster))
        roles.append(_perms(layout, Writer.DISCOVERY, cluster))
    return roles


def _already(exc: EtcdError) -> bool:
    return "already exists" in str(exc) or "already granted" in str(exc)


async def _ensure_user(
    client: EtcdClient,
    user: str,
    *,
    passwords_dir: Path | None,
    report: list[str],
) -> None:
    password = ""
    file = passwords_dir / f"{user}.password" if passwords_dir is not None else None
    fresh = file is not None and not file.exists()
    if fresh:
        password = secrets.token_urlsafe(24)
    options = rpc.UserAddOptions(no_password=file is None)
    try:
        await client.auth_call(
            "UserAdd", rpc.AuthUserAddRequest(name=user, password=password, options=options)
        )
        report.append(f"+ user {user}")
    except EtcdError as exc:
        if not _already(exc):
            raise
        if fresh:  # the password file was removed: rotate
            await client.auth_call(
                "UserChangePassword",
                rpc.AuthUserChangePasswordRequest(name=user, password=password),
            )
            report.append(f"~ user {user}: new password")
    if fresh and file is not None:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")


async def _ensure_role(client: EtcdClient, spec: RoleSpec, report: list[str]) -> None:
    try:
        await client.auth_call("RoleAdd", rpc.AuthRoleAddRequest(name=spec.name))
        report.append(f"+ role {spec.name}")
    except EtcdError as exc:
        if not _already(exc):
            raise
    resp: Any = await client.auth_call("RoleGet", rpc.AuthRoleGetRequest(role=spec.name))
    have = {
        (rpc.Permission.Type.Name(p.permType), bytes(p.key), bytes(p.range_end)) for p in resp.perm
    }
    for ptype, key, end in sorted(spec.permissions - have):
        perm = rpc.Permission(permType=rpc.Permission.Type.Value(ptype), key=key, range_end=end)
        await client.auth_call(
            "RoleGrantPermission", rpc.AuthRoleGrantPermissionRequest(name=spec.name, perm=perm)
        )
        report.append(f"+ {spec.name}: {ptype} {key.decode()}{'*' if end else ''}")
    for ptype, key, end in sorted(have - spec.permissions):
        await client.auth_call(
            "RoleRevokePermission",
            rpc.AuthRoleRevokePermissionRequest(role=spec.name, key=key, range_end=end),
        )
        report.append(f"- {spec.name}: {ptype} {key.decode()}{'*' if end else ''}")


async def _grant_role(client: EtcdClient, user: str, role: str) -> None:
    try:
        await client.auth_call("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=role))
    except EtcdError as exc:
        if not _already(exc):
            raise


async def _prune(client: EtcdClient, wanted: set[str], report: list[str]) -> None:
    """Delete the fedgate roles and users of clusters no longer named (decommissioned)."""
    ours = tuple(role_name(w) + "-" for w in (Writer.GATEWAY, Writer.DISCOVERY))
    roles: Any = await client.auth_call("RoleList", rpc.AuthRoleListRequest())
    for name in sorted(str(r) for r in roles.roles):
        if name.startswith(ours) and name not in wanted:
            await client.auth_call("RoleDelete", rpc.AuthRoleDeleteRequest(role=name))
            report.append(f"- role {name}")
    users: Any = await client.auth_call("UserList", rpc.AuthUserListRequest())
    for name in sorted(str(u) for u in users.users):
        if name.startswith(ours) and name not in wanted:
            await client.auth_call("UserDelete", rpc.AuthUserDeleteRequest(name=name))
            report.append(f"- user {name}")


async def bootstrap(
    client: EtcdClient,
    layout: KeyLayout,
    clusters: list[str],
    *,
    passwords_dir: Path | None = None,
    prune: bool = False,
) -> list[str]:
    """Create or reconcile every role and user, then enable authentication: what changed.

    ``client`` must be allowed to administer etcd: before authentication is enabled
    anyone with a certificate from the etcd CA is; after, only ``root`` (certificate
    CN ``root``, or its password from ``passwords_dir/root.password``). ``passwords_dir``
    must exist (mode 0700).
    """
    report: list[str] = []
    await _ensure_user(client, ROOT, passwords_dir=passwords_dir, report=report)
    try:
        await client.auth_call("RoleAdd", rpc.AuthRoleAddRequest(name=ROOT))
    except EtcdError as exc:
        if not _already(exc):
            raise
    await _grant_role(client, ROOT, ROOT)
    for spec in desired_roles(layout, clusters):
        await _ensure_role(client, spec, report)
        await _ensure_user(client, spec.name, passwords_dir=passwords_dir, report=report)
        await _grant_role(client, spec.name, spec.name)
    if prune:
        await _prune(client, {spec.name for spec in desired_roles(layout, clusters)}, report)
    status: Any = await client.auth_call("AuthStatus", rpc.AuthStatusRequest())
    if not status.enabled:
        await client.auth_call("AuthEnable", rpc.AuthEnableRequest())
        report.append("+ authentication enabled")
    return report
