"""What the cluster module's pod takes from gateway.yaml, evaluated by real Terraform
without providers: the admin probes' scheme (admin.tls), etcd's TLS material (CA and
client certificate, from a Secret or issued by Vault) and the checks that refuse
settings the pod could not mount.

``terraform/modules/fedgate-cluster/pod_settings.tf`` depends on the module's variables
alone, so it is copied with ``variables.tf`` into a module of its own, with the outputs
and the ``terraform test`` file of ``tests/terraform/pod_settings/``. The rest of the
module (the Deployment that uses these locals) is checked parsed by python-hcl2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.terraform.tf import TERRAFORM_DIR, Terraform, block, hcl, resources, terraform_binary

CLUSTER_MODULE = TERRAFORM_DIR / "modules" / "fedgate-cluster"
HERE = Path(__file__).resolve().parent / "pod_settings"


@pytest.fixture
def module(tmp_path: Path) -> tuple[Terraform, Path]:
    if terraform_binary() is None:
        pytest.skip("the terraform CLI is not installed on this machine")
    tf = Terraform(tmp_path / "tf")
    where = tmp_path / "pod"
    (where / "tests").mkdir(parents=True)
    for name in ("variables.tf", "pod_settings.tf"):
        shutil.copy(CLUSTER_MODULE / name, where / name)
    shutil.copy(HERE / "outputs.tf", where / "outputs.tf")
    shutil.copy(HERE / "pod_settings.tftest.hcl", where / "tests" / "pod_settings.tftest.hcl")
    init = tf.run("init", "-backend=false", "-input=false", "-no-color", cwd=where)
    assert init.returncode == 0, init.output
    return tf, where


def test_pod_settings_terraform_test(module: tuple[Terraform, Path]) -> None:
    tf, where = module
    result = tf.run("test", "-no-color", cwd=where, timeout=300)
    assert result.returncode == 0, result.output
    assert "9 passed, 0 failed" in result.output, result.output


_VAULT_NAMES = ("auth_mount", "auth_role", "pki_mount", "pki_role", "trust_domain", "spiffe_id")
BASE = {
    "cluster": {
        "name": "gcp-europe-west4",
        "namespaces": [],
        "vault": dict.fromkeys(_VAULT_NAMES, "x") | {"common_name": "x", "server_names": []},
    },
    "image": "fedgate:1",
    "admin_token": "0123456789abcdef0123",
    "kubernetes_host": "https://k8s:6443",
}
LISTEN = 'listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901"}\n'
TLS = (
    "{ca: /etc/fedgate/etcd-ca/ca.crt, cert: /etc/fedgate/etcd/tls.crt, "
    "key: /etc/fedgate/etcd/tls.key"
)


def _plan(tf: Terraform, where: Path, settings: str, **extra: Any) -> str:
    variables = BASE | {"settings_yaml": "cluster: gcp-europe-west4\n" + LISTEN + settings} | extra
    (where / "case.tfvars.json").write_text(json.dumps(variables))
    result = tf.run("plan", "-input=false", "-no-color", "-var-file=case.tfvars.json", cwd=where)
    return ("ok\n" if result.returncode == 0 else "") + result.output


@pytest.mark.parametrize(
    ("settings", "extra", "message"),
    [
        (f"etcd: {{endpoints: [https://e:2379], tls: {TLS}}}}}\n", {}, "give etcd_client_secret"),
        (
            f"etcd: {{endpoints: [https://e:2379], tls: {TLS}, vaultRole: r}}}}\n",
            {"etcd_client_secret": "s"},
            "give etcd_ca_cert_pem",
        ),
        (
            "etcd: {endpoints: [https://e:2379], tls: {ca: /tmp/ca.crt, cert: /e/c, key: /e/k}}\n",
            {"etcd_client_secret": "s"},
            "mounted at one folder",
        ),
        (
            "etcd: {endpoints: [https://e:2379], tls: {ca: /ca/ca.crt}}\n",
            {"etcd_ca_cert_pem": "PEM"},
            "etcd.tls without cert",
        ),
    ],
    ids=["no-client-secret", "vault-without-ca", "ca-over-tmp", "ca-only"],
)
def test_settings_the_pod_cannot_mount_are_refused_in_one_message(
    module: tuple[Terraform, Path], settings: str, extra: dict[str, Any], message: str
) -> None:
    tf, where = module
    out = _plan(tf, where, settings, **extra)
    assert not out.startswith("ok\n"), out
    assert "Resource precondition failed" in out and message in out, out
    ok = _plan(
        tf, where, f"etcd: {{endpoints: [https://e:2379], tls: {TLS}}}}}\n",
        etcd_client_secret="s", etcd_ca_cert_pem="PEM",
    )  # fmt: skip
    assert ok.startswith("ok\n"), ok


# ---------------------------------------------- the Deployment uses them (parsed HCL)


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(CLUSTER_MODULE.glob("*.tf")):
        out.update(resources(hcl(f)))
    return out


def test_every_probe_follows_the_admin_scheme(deployment: dict[str, Any]) -> None:
    dep = deployment["kubernetes_deployment_v1.gateway"]
    (container,) = block(dep, "spec", "template", "spec")["container"]
    for probe in ("readiness_probe", "startup_probe", "liveness_probe"):
        assert block(container, probe, "http_get")["scheme"] == "${local.admin_scheme}", probe
    annotations = str(block(dep, "spec", "template", "metadata")["annotations"])
    assert "prometheus.io/scheme" in annotations and "local.admin_scheme" in annotations


def test_etcd_ca_and_client_certificate_are_mounted(deployment: dict[str, Any]) -> None:
    dep = deployment["kubernetes_deployment_v1.gateway"]
    pod = block(dep, "spec", "template", "spec")
    (container,) = pod["container"]
    mounts = {
        d["volume_mount"]["content"][0]["name"]: d["volume_mount"]
        for d in container["dynamic"]
        if "volume_mount" in d
    }
    assert {"etcd-ca", "etcd-client"} <= set(mounts)
    assert "local.etcd_ca_dir" in str(mounts["etcd-ca"]["for_each"])
    client = mounts["etcd-client"]["content"][0]
    # read-only from a Secret; writable (the gateway writes what Vault issues) with vaultRole
    assert client["read_only"] == "${local.etcd_vault_role == null}"
    volumes = [d["volume"] for d in pod["dynamic"] if "volume" in d]
    text = str(volumes)
    assert "var.etcd_client_secret" in text and "tls.crt" in text and "tls.key" in text
    assert "'medium': 'Memory'" in text  # the Vault-issued key never touches the node's disk
    ca = deployment["kubernetes_secret_v1.etcd_ca"]
    assert "var.etcd_ca_cert_pem" in str(ca["count"])


def test_vault_issues_the_etcd_certificate_of_the_settings_role_only(
    deployment: dict[str, Any],
) -> None:
    role = deployment["vault_pki_secret_backend_role.etcd_client"]
    assert role["name"] == "${local.etcd_vault_role}"
    assert role["allowed_domains"] == ["${local.etcd_user}"]
    assert role["client_flag"] is True and role["server_flag"] is False
    policy = deployment["vault_policy.gateway"]["policy"]
    assert "/issue/${local.etcd_vault_role}" in policy


def test_the_dns_listener_is_reachable(deployment: dict[str, Any]) -> None:
    """listen.dns used to get no container port, no Service, and the NetworkPolicy (on by
    default) dropped every query to it; port 53 could not be bound without root."""
    dep = deployment["kubernetes_deployment_v1.gateway"]
    pod = block(dep, "spec", "template", "spec")
    (container,) = pod["container"]
    ports = [d["port"] for d in container["dynamic"] if "port" in d]
    assert any("dns-tcp" in str(p["for_each"]) and "UDP" in str(p["for_each"]) for p in ports)
    sysctl = block(pod, "security_context")["dynamic"][0]["sysctl"]
    assert sysctl["content"][0]["name"] == "net.ipv4.ip_unprivileged_port_start"
    service = deployment["kubernetes_service_v1.dns"]
    assert service["count"] == "${local.port.dns == null ? 0 : 1}"
    spec_ports = block(service, "spec")["port"]
    assert {(p["port"], p["protocol"]) for p in spec_ports} == {(53, "UDP"), (53, "TCP")}
    policy = (CLUSTER_MODULE / "network_policy.tf").read_text()
    assert 'for_each = local.port.dns == null ? [] : ["UDP", "TCP"]' in policy
