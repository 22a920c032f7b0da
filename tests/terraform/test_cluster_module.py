"""The fedgate-cluster module as an operator meets it: every variable and output described,
bad values refused by validations, Vault's CA mounted, a private registry and Prometheus
supported, and its `terraform test` with mock_provider, offline (the providers' schemas
come from tests/support/tfprovider).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.terraform.tf import (
    NO_TERRAFORM,
    TERRAFORM_DIR,
    Terraform,
    block,
    copy_tree,
    hcl,
    resources,
    terraform_binary,
    terraform_version,
)

MODULE = TERRAFORM_DIR / "modules" / "fedgate-cluster"

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")


def _items(path: Path, kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for item in hcl(path).get(kind, []) for k, v in item.items()}


def test_every_variable_and_output_is_described() -> None:
    for path in sorted(MODULE.glob("*.tf")):
        for kind in ("variable", "output"):
            for name, body in _items(path, kind).items():
                assert str(body.get("description", "")).strip(), f"{path.name}: {kind} {name}"
    readme = (MODULE / "README.md").read_text()
    for name in _items(MODULE / "variables.tf", "variable"):
        assert f"`{name}`" in readme, f"README.md does not document variable {name}"
    for name in _items(MODULE / "outputs.tf", "output"):
        assert f"`{name}`" in readme, f"README.md does not document output {name}"


def test_validations_of_types_replicas_and_pull_policy() -> None:
    variables = _items(MODULE / "variables.tf", "variable")
    for name in (
        "public_service_type", "east_west_service_type", "image_pull_policy", "replicas",
        "min_replicas", "max_replicas", "admin_token",
    ):  # fmt: skip
        assert variables[name].get("validation"), f"variable {name} has no validation"
    condition = variables["image_pull_policy"]["validation"][0]["condition"]
    assert all(p in condition for p in ("Always", "IfNotPresent", "Never"))


def test_vault_ca_pull_secrets_and_prometheus() -> None:
    module: dict[str, dict[str, Any]] = {}
    for f in sorted(MODULE.glob("*.tf")):
        module.update(resources(hcl(f)))
    ca = module["kubernetes_secret_v1.vault_ca"]
    assert "local.vault_ca" in str(ca["count"])
    dep = module["kubernetes_deployment_v1.gateway"]
    pod = block(dep, "spec", "template", "spec")
    text = str(pod)
    assert "image_pull_secrets" in text and "var.image_pull_secrets" in text
    assert "vault-ca" in text and "dirname(volume_mount.value)" in text
    annotations = str(block(dep, "spec", "template", "metadata")["annotations"])
    assert "prometheus.io/scrape" in annotations and "/metrics" in annotations
    assert "local.port.admin" in annotations


@pytest.mark.skipif(terraform_binary() is None, reason=NO_TERRAFORM)
def test_terraform_test_with_mocked_providers(tmp_path: Path) -> None:
    if terraform_version() < (1, 7):
        pytest.skip(f"mock_provider needs Terraform >= 1.7, this is {terraform_version()}")
    tf = Terraform(tmp_path / "tf")
    where = copy_tree(tmp_path / "copy") / "modules" / "fedgate-cluster"
    init = tf.run("init", "-backend=false", "-input=false", "-no-color", cwd=where, timeout=90)
    assert init.returncode == 0, init.output
    result = tf.run("test", "-no-color", cwd=where, timeout=300)
    assert result.returncode == 0, result.output
    assert "13 passed, 0 failed" in result.output, result.output
