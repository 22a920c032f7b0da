"""The modules' resources checked against the schemas without Terraform (python-hcl2):
every argument and block name known, no computed-only attribute set, every required
argument and block present. What `terraform validate` reports about names, offline and
on a machine without the terraform binary (types and expressions are Terraform's alone).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.tfprovider.schema import Block, ProviderSchema

# arguments of every resource block that are Terraform's, not the provider's
META = frozenset({"count", "for_each", "depends_on", "provider", "lifecycle"})
META_BLOCKS = frozenset({"lifecycle", "provisioner", "connection"})
PROVIDER_META = frozenset({"alias", "version"})
# Terraform's own resource types (the built-in provider terraform.io/builtin/terraform)
BUILTIN = frozenset({"terraform_data"})
BOOKKEEPING = frozenset({"__is_block__", "__comments__", "__inline_comments__"})


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def _is_blocks(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, dict) and v.get("__is_block__") for v in value
    )


def _instances(body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(name, body, dynamic) of each nested block written in ``body``."""
    for key, value in body.items():
        if key == "dynamic" and _is_blocks(value):
            for item in value:
                for name, spec in item.items():
                    if name in BOOKKEEPING:
                        continue
                    for content in spec.get("content", []):
                        yield _unquote(name), content, True
        elif _is_blocks(value):
            for item in value:
                yield key, item, False


def problems(body: dict[str, Any], schema: Block, where: str, top: bool = False) -> list[str]:
    """What is wrong in one block body (a resource's when ``top``)."""
    out: list[str] = []
    attributes = {a.name: a for a in schema.attributes}
    blocks = {b.name: b for b in schema.blocks}
    seen: dict[str, int] = {}
    for name, inner, dynamic in _instances(body):
        if top and name in META_BLOCKS:
            continue
        seen[name] = seen.get(name, 0) + (0 if dynamic else 1)
        if name not in blocks:
            kind = "an argument" if name in attributes else "unknown"
            out.append(f"{where}: block {name!r}: {kind}, not a block")
            continue
        out += problems(inner, blocks[name].block, f"{where}.{name}")
    for key, value in body.items():
        if key in BOOKKEEPING or key == "dynamic" or _is_blocks(value):
            continue
        if top and key in META:
            continue
        attribute = attributes.get(key)
        if attribute is None:
            kind = "a block" if key in blocks else "unknown"
            out.append(f"{where}: argument {key!r}: {kind}")
        elif attribute.mode == "computed":
            out.append(f"{where}: argument {key!r} is computed, it cannot be set")
    for a in schema.attributes:
        if a.mode == "required" and a.name not in body:
            out.append(f"{where}: required argument {a.name!r} missing")
    dynamic_names = {name for name, _, dyn in _instances(body) if dyn}
    for b in schema.blocks:
        if b.min_items and not seen.get(b.name) and b.name not in dynamic_names:
            out.append(f"{where}: required block {b.name!r} missing")
    return out


def check_file(path: Path, schemas: dict[str, ProviderSchema]) -> list[str]:
    """Every problem of the provider and resource blocks of one .tf file; ``schemas`` by
    provider local name (a resource type's prefix: kubernetes_deployment_v1 ->
    kubernetes)."""
    import hcl2

    with open(path) as f:
        parsed = hcl2.load(f)
    out: list[str] = []
    for item in parsed.get("provider", []):
        for pname, body in item.items():
            pname = _unquote(pname)
            if pname in schemas:
                plain = {k: v for k, v in body.items() if k not in PROVIDER_META}
                out += problems(plain, schemas[pname].provider, f"{path.name}: provider {pname}")
    for item in parsed.get("resource", []):
        for rtype, named in item.items():
            rtype = _unquote(rtype)
            if rtype in BUILTIN:
                continue
            schema = schemas.get(rtype.split("_")[0])
            for name, body in named.items():
                where = f"{path.name}: {rtype}.{_unquote(name)}"
                if schema is None or rtype not in schema.resources:
                    out.append(f"{where}: no schema for this resource type")
                    continue
                out += problems(body, schema.resources[rtype][1], where, top=True)
    return out
