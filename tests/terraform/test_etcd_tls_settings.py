"""Terraform renders etcd over mutual TLS, and what it renders works against a real etcd.

The settings module (``etcd_tls``) gives every cluster's gateway.yaml https:// endpoints,
etcd's CA and a client certificate, and names the etcd user of its gateways
(``etcd_user``). Here that user is the role ``fedgate etcd-bootstrap`` creates, a
certificate issued for it (as the cluster module mounts it from a Secret) reaches a real
etcd run with ``--client-cert-auth`` and auth on through the rendered settings alone, and
writes the cluster's own records, never a service or another cluster's keys.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation import codec
from federation.etcd import EtcdClient, EtcdError
from federation.etcd_roles import bootstrap
from federation.keys import KeyLayout, Writer, role_name
from federation.model import GatewayRecord
from federation.settings import load_settings
from federation.vault import etcd_client_cert
from tests.support.etcd import EtcdCluster
from tests.terraform.tf import (
    EXAMPLE_MANIFEST,
    REPO,
    TERRAFORM_DIR,
    Terraform,
    render_json,
    terraform_binary,
)

SETTINGS_MODULE = TERRAFORM_DIR / "modules" / "fedgate-settings"
LAYOUT = KeyLayout("/fedgate/")


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(tls=True) as etcd:
        yield etcd


def _apply(tf: Terraform, root: Path, etcd: list[str], etcd_tls: str) -> dict[str, Any]:
    root.mkdir(parents=True)
    (root / "federation.json").write_text(render_json(EXAMPLE_MANIFEST))
    (root / "main.tf").write_text(
        f"""
module "settings" {{
  source             = "{SETTINGS_MODULE}"
  manifest_json_path = "{root / "federation.json"}"
  etcd_endpoints     = {json.dumps(etcd)}
  etcd_tls           = {etcd_tls}
  admin_tls          = true
  vault = {{
    addr         = "https://vault.acme.net:8200"
    trust_domain = "acme.net"
  }}
}}

output "settings" {{
  value = module.settings.settings
}}

output "clusters" {{
  value = module.settings.clusters
}}
"""
    )
    assert tf.run("init", "-input=false", cwd=root).returncode == 0
    applied = tf.run("apply", "-auto-approve", "-input=false", "-no-color", cwd=root, timeout=300)
    assert applied.returncode == 0, applied.output
    out = tf.run("output", "-json", cwd=root)
    assert out.returncode == 0, out.output
    return {k: v["value"] for k, v in json.loads(out.stdout).items()}


@pytest.fixture
def tf(tmp_path: Path) -> Terraform:
    if terraform_binary() is None:
        pytest.skip("the terraform CLI is not installed on this machine")
    return Terraform(tmp_path / "tf")


def test_rendered_etcd_tls_reaches_a_real_etcd_as_the_gateway_role(
    tf: Terraform, tls_etcd: EtcdCluster, tmp_path: Path
) -> None:
    pod = tmp_path / "pod"  # where the cluster module mounts the CA and the Secret
    paths = {"ca": pod / "etcd-ca" / "ca.crt", "cert": pod / "etcd" / "tls.crt"}
    paths["key"] = pod / "etcd" / "tls.key"
    hcl_tls = "{" + ", ".join(f'{k} = "{v}"' for k, v in paths.items()) + "}"
    out = _apply(tf, tmp_path / "root", tls_etcd.endpoints, hcl_tls)
    names = sorted(out["settings"])
    assert len(names) == 5
    for name in names:
        # the user Terraform names is the role the bootstrap creates
        assert out["clusters"][name]["etcd_user"] == role_name(Writer.GATEWAY, name)

    async def roles() -> None:
        async with EtcdClient(tls_etcd.endpoints, tls=tls_etcd.client_tls("root")) as root:
            await bootstrap(root, LAYOUT, names)

    asyncio.run(roles())

    name, other = "onprem-fra1", "aws-eu-west-1"
    issued = tls_etcd.client_tls(out["clusters"][name]["etcd_user"])  # the Secret's content
    for what, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(getattr(issued, what), path)
    gateway_yaml = tmp_path / "gateway.yaml"
    gateway_yaml.write_text(out["settings"][name])
    s = load_settings(gateway_yaml, environ={})
    assert list(s.etcd.endpoints) == tls_etcd.endpoints
    assert s.etcd.tls is not None and s.etcd.tls.vault_role is None
    assert s.admin.tls is True

    async def as_the_gateway() -> None:
        async with EtcdClient(s.etcd.endpoints, timeout=2.0, **s.etcd.client_options()) as gw:
            record = codec.encode(GatewayRecord("gw1", name))
            await gw.put(LAYOUT.gateway(name, "gw1"), record)
            for key in (LAYOUT.service("shop"), LAYOUT.gateway(other, "gw1")):
                with pytest.raises(EtcdError, match="permission denied"):
                    await gw.put(key, b"{}")

    asyncio.run(as_the_gateway())

    # and `fedgate serve --check` accepts it as the pod would run it
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDGATE_")}
    env["FEDGATE_ADMIN_TOKEN"] = "x" * 32
    proc = subprocess.run(
        [sys.executable, "-m", "federation.cli", "serve", "--config", str(gateway_yaml), "--check"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vault_issued_etcd_certificate_is_the_gateway_role(tf: Terraform, tmp_path: Path) -> None:
    """With vault_role_format, each gateway.yaml asks Vault for its cluster's etcd role."""
    out = _apply(
        tf,
        tmp_path / "root",
        ["https://etcd-0.fedgate.acme.net:2379"],
        '{vault_role_format = "fedgate-etcd-%s"}',
    )
    for name, text in out["settings"].items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        spec = etcd_client_cert(load_settings(path, environ={}))
        assert spec is not None
        assert spec.role == f"fedgate-etcd-{name}"
        assert spec.common_name == out["clusters"][name]["etcd_user"]
        assert (spec.cert, spec.key) == (
            "/etc/fedgate-etcd/client/tls.crt",
            "/etc/fedgate-etcd/client/tls.key",
        )
