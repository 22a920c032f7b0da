"""The schema-only providers of tests/support/tfprovider: they speak go-plugin's handshake
and tfplugin6 as Terraform expects, their schemas are well formed, and they are strict
enough that a misspelt argument or block, or a missing required argument, in the modules
fails `terraform validate`."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from tests.support.tfprovider import PROVIDERS, REPO, install_mirror, kubernetes, server, tls, vault
from tests.support.tfprovider.check import BUILTIN, check_file
from tests.support.tfprovider.schema import Block, ProviderSchema
from tests.support.wait import wait_for
from tests.terraform.tf import NO_TERRAFORM, Terraform, copy_tree, terraform_binary

SCHEMAS = {"kubernetes": kubernetes.SCHEMA, "vault": vault.schema()}
COOKIE = {server.MAGIC_COOKIE_KEY: server.MAGIC_COOKIE}


def _check_block(where: str, b: Block) -> None:
    names = b.names()
    assert len(names) == len(set(names)), f"{where}: a name defined twice"
    for a in b.attributes:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", a.name), f"{where}.{a.name}"
        assert a.mode in ("required", "optional", "computed", "optional+computed")
    for n in b.blocks:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", n.name), f"{where}.{n.name}"
        assert n.max_items == 0 or n.min_items <= n.max_items, f"{where}.{n.name}"
        _check_block(f"{where}.{n.name}", n.block)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schemas_are_well_formed(name: str) -> None:
    schema: ProviderSchema = SCHEMAS[name]
    _check_block(name, schema.provider)
    for rtype, (version, b) in schema.resources.items():
        assert rtype.startswith(f"{name}_") and version >= 0
        assert "id" in b.names(), f"{rtype}: SDKv2 resources have an id"
        _check_block(rtype, b)


def test_every_resource_type_of_the_modules_has_a_schema() -> None:
    used = set()
    for tf in (REPO / "terraform").rglob("*.tf"):
        used |= set(re.findall(r'^resource\s+"([a-z0-9_]+)"', tf.read_text(), re.M))
    used -= BUILTIN  # Terraform's own (terraform_data)
    served = {t for s in SCHEMAS.values() for t in s.resources}
    assert used, "no resource found under terraform/"
    assert used <= served, f"no schema for {sorted(used - served)}"


def test_the_provider_refuses_to_run_outside_terraform(tmp_path: Path) -> None:
    """Run by hand, the executable says it is a plugin and exits 1 (as every provider)."""
    mirror = install_mirror(tmp_path / "mirror")
    (launcher,) = mirror.rglob("terraform-provider-vault_*")
    env = {k: v for k, v in os.environ.items() if k != server.MAGIC_COOKIE_KEY}
    proc = subprocess.run(
        [str(launcher)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert "This binary is a plugin" in proc.stderr


def test_handshake_schema_and_shutdown_over_mutual_tls(tmp_path: Path) -> None:
    """What go-plugin does with AutoMTLS: hand over a client certificate, read the
    handshake line, dial the address with TLS trusting the printed certificate for
    "localhost", ask for the schema, then Shutdown: the process exits 0. The provider is
    started by its launcher in the mirror, as Terraform starts it."""
    client_key, client_pem = tls.self_signed()
    (launcher,) = install_mirror(tmp_path / "mirror").rglob("terraform-provider-kubernetes_*")
    env = os.environ | COOKIE | {"PLUGIN_CLIENT_CERT": client_pem.decode()}
    env["PLUGIN_PROTOCOL_VERSIONS"] = "5,6"
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [str(launcher)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # bounded: the process prints it or exits
        assert line, f"no handshake line; stderr: {stderr.read_text()}"
        core, version, network, address, protocol, cert = line.split("|")
        assert (core, version, network, protocol) == ("1", "6", "tcp", "grpc"), line
        assert address.startswith("127.0.0.1:")
        der = base64.b64decode(cert + "=" * (-len(cert) % 4))
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        server_pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=server_pem, private_key=client_key, certificate_chain=client_pem
        )
        options = [("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(address, credentials, options=options) as channel:
            get_schema = channel.unary_unary("/tfplugin6.Provider/GetProviderSchema")
            assert get_schema(b"", timeout=30) == kubernetes.SCHEMA.encode()
            validate = channel.unary_unary("/tfplugin6.Provider/ValidateResourceConfig")
            assert validate(b"", timeout=30) == b""  # no diagnostics
            plan = channel.unary_unary("/tfplugin6.Provider/PlanResourceChange")
            with pytest.raises(grpc.RpcError) as refused:
                plan(b"", timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
            channel.unary_unary("/plugin.GRPCController/Shutdown")(b"", timeout=30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.skipif(terraform_binary() is None, reason=NO_TERRAFORM)
def test_a_misspelt_or_missing_argument_fails_validate(tmp_path: Path) -> None:
    """The schemas are the providers' names, not a catch-all: in a copy of the cluster
    module, a misspelt argument (kubernetes and vault), a misspelt block and a missing
    required argument are each reported by `terraform validate`."""
    module = copy_tree(tmp_path / "copy") / "modules" / "fedgate-cluster"
    main, vault_tf = module / "main.tf", module / "vault.tf"
    breaks = [
        (main, "run_as_non_root = true", "run_as_non_rot = true"),
        (main, "readiness_probe {", "readyness_probe {"),
        (main, 'topology_key = "topology.kubernetes.io/zone"', ""),
        (vault_tf, "allowed_uri_sans = [", "allowed_uri_san = ["),
    ]
    for path, good, bad in breaks:  # the first occurrence of each
        text = path.read_text()
        assert good in text, f"{path.name} no longer has {good!r}: pick another to break"
        path.write_text(text.replace(good, bad, 1))
    tf = Terraform(tmp_path / "tf")
    init = tf.run("init", "-backend=false", "-input=false", "-no-color", cwd=module, timeout=90)
    assert init.returncode == 0, init.output
    result = tf.run("validate", "-no-color", cwd=module)
    assert result.returncode != 0, result.output
    out = " ".join(result.output.split())
    assert 'An argument named "run_as_non_rot" is not expected here' in out, out
    assert 'Blocks of type "readyness_probe" are not expected here' in out, out
    assert 'The argument "topology_key" is required' in out, out
    assert 'An argument named "allowed_uri_san" is not expected here' in out, out


def test_providers_match_the_modules_version_constraints() -> None:
    """The mirror's versions satisfy every required_providers constraint of terraform/."""
    for versions in (REPO / "terraform").rglob("versions.tf"):
        text = versions.read_text()
        for name, (source, version) in PROVIDERS.items():
            block = re.search(rf"{name}\s*=\s*\{{([^}}]*)\}}", text)
            if block is None:
                continue
            assert f'source  = "{source.removeprefix("registry.terraform.io/")}"' in block[1]
            constraint = re.search(r'version\s*=\s*"([^"]+)"', block[1])
            assert constraint is not None
            assert _satisfies(version, constraint[1]), (versions, name, version, constraint[1])


def _satisfies(version: str, constraint: str) -> bool:
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))

    ops = {
        ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        "<": lambda a, b: a < b,
        "=": lambda a, b: a == b,
    }
    for part in constraint.split(","):
        m = re.fullmatch(r"\s*(>=|<=|>|<|=)?\s*([0-9.]+)\s*", part)
        assert m is not None, constraint
        if not ops[m[1] or "="](key(version), key(m[2])):
            return False
    return True


def test_the_provider_exits_when_terraform_dies_without_shutdown(tmp_path: Path) -> None:
    """A Terraform killed mid-run sends no Shutdown: its providers exit on their own."""
    _, client_pem = tls.self_signed()
    (launcher,) = install_mirror(tmp_path / "mirror").rglob("terraform-provider-vault_*")
    env = os.environ | COOKIE | {"PLUGIN_CLIENT_CERT": client_pem.decode()}
    pid_file = tmp_path / "provider.pid"
    # a parent shell that starts the provider, reports its pid, and is killed
    parent = subprocess.Popen(
        [
            "sh",
            "-c",
            f"{launcher} > {tmp_path / 'out'} & echo $! > {pid_file}; wait",
        ],
        env=env,
    )
    pid = 0
    try:
        out = tmp_path / "out"
        wait_for(lambda: out.exists() and out.read_text(), timeout=30, what="the handshake")
        pid = int(pid_file.read_text())
        parent.kill()
        parent.wait(timeout=30)
        wait_for(lambda: not _alive(pid), timeout=30, what="the orphaned provider's exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=30)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone too: reaped by init once its parent died
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


# ------------------------------------------------- the same, without the terraform binary

BREAKS = [  # (file, good, bad, what check_file says)
    ("main.tf", "run_as_non_root = true", "run_as_non_rot = true", "argument 'run_as_non_rot'"),
    ("main.tf", "readiness_probe {", "readyness_probe {", "block 'readyness_probe'"),
    ("main.tf", 'topology_key = "topology.kubernetes.io/zone"', "", "'topology_key' missing"),
    ("vault.tf", "allowed_uri_sans = [", "allowed_uri_san = [", "argument 'allowed_uri_san'"),
]


def test_the_modules_match_the_schemas_without_terraform() -> None:
    """Every provider and resource block of terraform/ against the schemas, read by
    python-hcl2: what runs on a machine without the terraform binary."""
    pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")
    found = [
        p for tf in sorted((REPO / "terraform").rglob("*.tf")) for p in check_file(tf, SCHEMAS)
    ]
    assert found == []


@pytest.mark.parametrize("where,good,bad,message", BREAKS, ids=[b[2] or "missing" for b in BREAKS])
def test_the_offline_check_finds_a_broken_name(
    tmp_path: Path, where: str, good: str, bad: str, message: str
) -> None:
    pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")
    source = REPO / "terraform" / "modules" / "fedgate-cluster" / where
    text = source.read_text()
    assert good in text, f"{where} no longer has {good!r}: pick another to break"
    broken = tmp_path / where
    broken.write_text(text.replace(good, bad, 1))
    found = check_file(broken, SCHEMAS)
    assert len(found) == 1 and message in found[0], found
