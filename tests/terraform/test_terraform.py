"""Terraform, offline: fmt, `terraform test` of the provider-less settings module, the
rendered gateway.yaml of every cluster loaded by fedgate itself, and `terraform validate`
of the modules that need providers (hashicorp/kubernetes and hashicorp/vault, served by
the schema-only providers of tests/support/tfprovider). The checks of the HCL itself
(python-hcl2) run without the terraform binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.settings import load_settings
from tests.terraform.tf import (
    EXAMPLE_MANIFEST,
    NO_TERRAFORM,
    REPO,
    TERRAFORM_DIR,
    Terraform,
    block,
    copy_tree,
    hcl,
    render_json,
    resources,
    terraform_binary,
)

# the tests that run terraform take the `tf` fixture (skipped without the binary); the
# ones that read the HCL with python-hcl2 run everywhere

SETTINGS_MODULE = TERRAFORM_DIR / "modules" / "fedgate-settings"
CLUSTER_MODULE = TERRAFORM_DIR / "modules" / "fedgate-cluster"
EXAMPLE = TERRAFORM_DIR / "examples" / "multi-cluster"

ETCD = ["http://etcd-0.fedgate.acme.net:2379", "http://etcd-1.fedgate.acme.net:2379"]


@pytest.fixture
def tf(tmp_path: Path) -> Terraform:
    if terraform_binary() is None:
        pytest.skip(NO_TERRAFORM)
    return Terraform(tmp_path / "tf")


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE_MANIFEST.read_text())
    return data


# ---------------------------------------------------------------------------- CLI


def test_cli_configuration_problem_is_isolated(tf: Terraform, tmp_path: Path) -> None:
    """The machine's TF_CLI_CONFIG_FILE names a missing file; our runs never see it."""
    result = tf.run("version", cwd=tmp_path)
    assert result.returncode == 0, result.output
    assert "Terraform v1." in result.stdout
    assert "problems with the CLI configuration" not in result.output


def test_fmt_is_clean(tf: Terraform) -> None:
    result = tf.run("fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR), cwd=REPO)
    assert result.returncode == 0, f"terraform fmt would change:\n{result.output}"


# --------------------------------------------------------------- settings module


def test_settings_module_terraform_test(tf: Terraform, tmp_path: Path) -> None:
    """`terraform test`: the settings rendered for every cluster of clusters.example.yaml."""
    assert EXAMPLE_MANIFEST.exists(), "clusters.example.yaml is missing"
    data = tmp_path / "settings-data"
    init = tf.run("init", "-backend=false", "-input=false", cwd=SETTINGS_MODULE, data_dir=data)
    assert init.returncode == 0, init.output
    result = tf.run("test", "-no-color", cwd=SETTINGS_MODULE, data_dir=data, timeout=300)
    assert result.returncode == 0, result.output
    assert "10 passed, 0 failed" in result.output, result.output
    assert not (SETTINGS_MODULE / "terraform.tfstate").exists()


def test_settings_fixtures_are_what_fedgate_renders() -> None:
    """The module's test fixtures are `fedgate render` of the YAML they come from."""
    fixtures = SETTINGS_MODULE / "tests" / "fixtures"
    pairs = [(EXAMPLE_MANIFEST, fixtures / "clusters.example.json")] + [
        (y, y.with_suffix(".json")) for y in sorted(fixtures.glob("*.yaml"))
    ]
    for source, rendered_file in pairs:
        assert rendered_file.read_text() == render_json(source), (
            f"{rendered_file.name} is stale: fedgate render {source.name} > {rendered_file.name}"
        )


def test_the_settings_module_does_not_parse_yaml() -> None:
    """Terraform reads what fedgate rendered; it has no manifest rules of its own (no YAML
    parsing, no try() defaults for manifest fields)."""
    text = (SETTINGS_MODULE / "main.tf").read_text() + (SETTINGS_MODULE / "outputs.tf").read_text()
    assert "yamldecode" not in text
    for guess in ("try(c.", "try(s.", "try(r.", "try(local.manifest"):
        assert guess not in text, guess


@pytest.fixture
def rendered(tf: Terraform, tmp_path: Path) -> dict[str, str]:
    """Apply the provider-less module (local state in tmp) and read its `settings` output."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "federation.json").write_text(render_json(EXAMPLE_MANIFEST))
    (root / "main.tf").write_text(
        f"""
module "settings" {{
  source             = "{SETTINGS_MODULE}"
  manifest_json_path = "{root / "federation.json"}"
  etcd_endpoints = {json.dumps(ETCD)}
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
    out = tf.run("output", "-json", "settings", cwd=root)
    assert out.returncode == 0, out.output
    settings: dict[str, str] = json.loads(out.stdout)
    return settings


def test_rendered_settings_load_in_fedgate(rendered: dict[str, str], tmp_path: Path) -> None:
    """Every rendered gateway.yaml passes federation.settings.load_settings."""
    names = [c["name"] for c in manifest()["clusters"]]
    assert sorted(rendered) == sorted(names)
    for name, text in rendered.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        s = load_settings(path, environ={})
        assert s.cluster == name
        assert list(s.etcd.endpoints) == ETCD and s.etcd.prefix == "/fedgate/"
        assert s.listen.public == "0.0.0.0:8080" and s.listen.east_west == "0.0.0.0:15443"
        assert s.listen.admin == "0.0.0.0:9901" and s.listen.public_tls == "0.0.0.0:8443"
        assert s.vault is not None and s.vault.addr == "https://vault.acme.net:8200"
        assert s.vault.auth.method == "kubernetes" and s.vault.auth.role == "fedgate"
        assert s.vault.auth.mount == f"kubernetes-{name}"
        assert s.vault.pki is not None and s.vault.pki.role == f"fedgate-{name}"
        assert s.vault.pki.trust_domain == "acme.net" and s.vault.pki.server_names
        assert s.admin.token_file == "/run/secrets/fedgate/admin-token"
        assert s.snapshot == "/var/lib/fedgate/view.json"


def test_rendered_settings_pass_fedgate_serve_check(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    """`fedgate serve --config X --check` accepts every rendered gateway.yaml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDGATE_")}
    env["FEDGATE_ADMIN_TOKEN"] = "x" * 32  # the token file exists only in the pod
    for name, text in rendered.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        proc = subprocess.run(
            [sys.executable, "-m", "federation.cli", "serve", "--config", str(path), "--check"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"
        assert f"cluster {name}" in proc.stdout


def test_terraform_reads_the_manifest_as_fedgate_does(
    tf: Terraform, rendered: dict[str, str], tmp_path: Path
) -> None:
    """Tiers, east-west addresses and namespaces: Terraform's reading == the Python loader's."""
    from federation.manifest import load_manifest

    fed = load_manifest(EXAMPLE_MANIFEST)
    out = tf.run("output", "-json", "clusters", cwd=tmp_path / "root")
    assert out.returncode == 0, out.output
    clusters = json.loads(out.stdout)
    assert sorted(clusters) == sorted(c.name for c in fed.clusters)
    for c in fed.clusters:
        rendered_c = clusters[c.name]
        assert rendered_c["tier"] == c.tier
        assert rendered_c["cloud"] == c.cloud and rendered_c["region"] == c.region
        assert rendered_c["east_west"] == c.east_west
        ns = list(c.kubernetes.namespaces) if c.kubernetes else []
        assert rendered_c["namespaces"] == ns
        assert rendered_c["peers"] == {
            o.name: o.east_west for o in fed.clusters if o.name != c.name and o.east_west
        }
        hosts = {r.host for s in fed.services if c.name in s.clusters for r in s.routes}
        assert hosts <= set(rendered_c["vault"]["server_names"])


# ------------------------------------------------------ modules that need providers


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """A copy of terraform/ (init writes a lock file next to the configuration)."""
    yield copy_tree(tmp_path / "copy")


@pytest.mark.parametrize(
    "module", ["modules/fedgate-settings", "modules/fedgate-cluster", "examples/multi-cluster"]
)
def test_validate_with_providers(tf: Terraform, tree: Path, module: str) -> None:
    """`terraform init -backend=false` + `terraform validate` of every module and the
    example, against the providers' schemas, offline."""
    where = tree / module
    init = tf.run("init", "-backend=false", "-input=false", "-no-color", cwd=where, timeout=90)
    assert init.returncode == 0, init.output
    result = tf.run("validate", "-no-color", cwd=where)
    assert result.returncode == 0, result.output
    assert "The configuration is valid" in result.output


# ------------------------------------------- what the cluster module deploys (parsed)


@pytest.fixture(scope="module")
def cluster_module() -> dict[str, dict[str, Any]]:
    pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(CLUSTER_MODULE.glob("*.tf")):
        out.update(resources(hcl(f)))
    return out


def test_deployment_probes_security_and_anti_affinity(
    cluster_module: dict[str, dict[str, Any]],
) -> None:
    dep = cluster_module["kubernetes_deployment_v1.gateway"]
    pod = block(dep, "spec", "template", "spec")
    (container,) = pod["container"]
    scheme = "${local.admin_scheme}"  # HTTPS with admin.tls (tests/terraform/test_pod_settings.py)
    assert block(container, "readiness_probe", "http_get") == {
        "path": "/readyz",
        "port": "admin",
        "scheme": scheme,
    }
    assert block(container, "liveness_probe", "http_get") == {
        "path": "/healthz",
        "port": "admin",
        "scheme": scheme,
    }
    assert container["args"] == ["serve", "--config", "/etc/fedgate/gateway.yaml"]
    ports = {p["name"] for p in container["port"]}
    assert {"public", "east-west", "admin"} <= ports
    sc = block(container, "security_context")
    assert sc["allow_privilege_escalation"] is False and sc["read_only_root_filesystem"] is True
    assert block(pod, "security_context")["run_as_non_root"] is True
    anti = block(pod, "affinity", "pod_anti_affinity")
    terms = anti["preferred_during_scheduling_ignored_during_execution"]
    keys = {block(t, "pod_affinity_term")["topology_key"] for t in terms}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    mounts = {m["name"]: m["mount_path"] for m in container["volume_mount"]}
    assert mounts["settings"] == "/etc/fedgate"
    assert pod["service_account_name"].startswith("${kubernetes_service_account_v1.gateway")


def test_pdb_hpa_and_services(cluster_module: dict[str, dict[str, Any]]) -> None:
    pdb = cluster_module["kubernetes_pod_disruption_budget_v1.gateway"]
    assert block(pdb, "spec")["max_unavailable"] == "1"
    hpa = cluster_module["kubernetes_horizontal_pod_autoscaler_v2.gateway"]
    target = block(hpa, "spec", "scale_target_ref")
    assert target["kind"] == "Deployment" and "kubernetes_deployment_v1.gateway" in target["name"]
    assert block(hpa, "spec", "metric", "resource")["name"] == "cpu"
    public = block(cluster_module["kubernetes_service_v1.public"], "spec")
    assert public["type"] == "${var.public_service_type}"
    assert {p["target_port"] for p in public["port"]} == {"public"}
    east_west = block(cluster_module["kubernetes_service_v1.east_west"], "spec")
    assert block(east_west, "port")["target_port"] == "east-west"
    variables = hcl(CLUSTER_MODULE / "variables.tf")["variable"]
    defaults = {k: v.get("default") for item in variables for k, v in item.items()}
    assert defaults["public_service_type"] == "LoadBalancer"
    assert defaults["east_west_service_type"] == "LoadBalancer"


def test_rbac_reads_endpointslices_and_may_review_tokens(
    cluster_module: dict[str, dict[str, Any]],
) -> None:
    role = cluster_module["kubernetes_cluster_role_v1.discovery"]
    rule = block(role, "rule")
    assert rule["api_groups"] == ["discovery.k8s.io"] and rule["resources"] == ["endpointslices"]
    assert set(rule["verbs"]) == {"get", "list", "watch"}
    binding = cluster_module["kubernetes_role_binding_v1.discovery"]
    assert binding["for_each"] == "${toset(var.cluster.namespaces)}"
    delegator = cluster_module["kubernetes_cluster_role_binding_v1.token_review"]
    assert block(delegator, "role_ref")["name"] == "system:auth-delegator"
    cm = cluster_module["kubernetes_config_map_v1.settings"]
    assert "gateway.yaml" in cm["data"]


def test_vault_side_allows_the_spiffe_identity(cluster_module: dict[str, dict[str, Any]]) -> None:
    pki = cluster_module["vault_pki_secret_backend_role.gateway"]
    assert pki["allowed_uri_sans"] == ["${var.cluster.vault.spiffe_id}"]
    assert pki["name"] == "${var.cluster.vault.pki_role}"
    auth_role = cluster_module["vault_kubernetes_auth_backend_role.gateway"]
    assert auth_role["bound_service_account_names"] == [
        "${kubernetes_service_account_v1.gateway.metadata[0].name}"
    ]
    assert auth_role["token_policies"] == ["${vault_policy.gateway.name}"]
    policy = cluster_module["vault_policy.gateway"]["policy"]
    assert "/issue/${var.cluster.vault.pki_role}" in policy
    backend = cluster_module["vault_auth_backend.kubernetes"]
    assert backend["type"] == "kubernetes"


def test_example_deploys_two_clouds_and_an_onprem_site_from_one_manifest() -> None:
    pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")
    providers = hcl(EXAMPLE / "providers.tf")["provider"]
    aliases = {
        body["alias"]: body for p in providers for kind, body in p.items() if kind == "kubernetes"
    }
    assert set(aliases) == {"aws_eu", "gcp_eu", "onprem"}
    for alias, body in aliases.items():
        assert body["config_path"] == f"${{var.{alias}.config_path}}"
        assert body["config_context"] == f"${{var.{alias}.config_context}}"
    modules = {k: v for m in hcl(EXAMPLE / "main.tf")["module"] for k, v in m.items()}
    assert modules["settings"]["source"] == "../../modules/fedgate-settings"
    for alias in aliases:
        assert modules[alias]["source"] == "../../modules/fedgate-cluster"
        assert modules[alias]["providers"]["kubernetes"] == f"${{kubernetes.{alias}}}"
    # the clusters it deploys by default exist in the example manifest: aws, gcp, onprem
    variables = {
        k: v for item in hcl(EXAMPLE / "variables.tf")["variable"] for k, v in item.items()
    }
    assert variables["manifest_json_path"]["default"] == "federation.json"
    clouds = {c["name"]: c.get("cloud") for c in manifest()["clusters"]}
    for alias, cloud in (("aws_eu", "aws"), ("gcp_eu", "gcp"), ("onprem", "onprem")):
        type_text = variables[alias]["type"]
        default_name = type_text.split("cluster")[1].split('"')[1]
        assert clouds.get(default_name) == cloud, (alias, default_name)


def test_example_wiring_plans_offline(tf: Terraform, tree: Path) -> None:
    """The example's plumbing, planned without providers: the cluster module is replaced
    by a stub with its real variables.tf (types, validations) and no resources, and the
    provider blocks are dropped. What remains must plan: the settings module's outputs
    convert to the cluster module's inputs for the three clusters it deploys."""
    import re

    stub = tree / "modules" / "fedgate-cluster"
    for f in stub.glob("*.tf"):
        if f.name != "variables.tf":
            f.unlink()
    outputs = hcl(CLUSTER_MODULE / "outputs.tf")["output"]
    (stub / "outputs.tf").write_text(
        "".join(
            f'output "{name}" {{\n  value = var.cluster.name\n}}\n'
            for item in outputs
            for name in item
        )
    )
    example = tree / "examples" / "multi-cluster"
    (example / "providers.tf").unlink()
    (example / "versions.tf").write_text('terraform {\n  required_version = ">= 1.6"\n}\n')
    main = (example / "main.tf").read_text()
    main, n = re.subn(r"\n\s*providers\s*=\s*\{[^}]*\}", "", main)
    assert n == 3
    (example / "main.tf").write_text(main)
    (example / "terraform.tfvars").write_text((EXAMPLE / "terraform.tfvars.example").read_text())
    init = tf.run("init", "-backend=false", "-input=false", "-no-color", cwd=example)
    assert init.returncode == 0, init.output
    plan = tf.run("plan", "-input=false", "-no-color", "-out=plan.tfplan", cwd=example, timeout=300)
    assert plan.returncode == 0, plan.output
    shown = tf.run("show", "-json", "plan.tfplan", cwd=example)
    assert shown.returncode == 0, shown.output
    planned = json.loads(shown.stdout)["planned_values"]["outputs"]
    assert planned["federation"]["value"] == "acme-prod"
    assert set(planned["east_west"]["value"]) == {
        "aws-eu-west-1",
        "gcp-europe-west4",
        "onprem-fra1",
    }
    assert set(planned["not_deployed_here"]["value"]) == {"aws-us-east-1", "azure-westeurope"}
    # a too-short admin token is refused by the cluster module's validation
    tfvars = (example / "terraform.tfvars").read_text()
    (example / "terraform.tfvars").write_text(
        re.sub(r'admin_token\s*=\s*"[^"]*"', 'admin_token = "short"', tfvars)
    )
    bad = tf.run("plan", "-input=false", "-no-color", cwd=example, timeout=300)
    assert bad.returncode != 0 and "admin_token must be at least 16 characters" in bad.output
