"""Provider schemas as Terraform's plugin protocol carries them (tfplugin6 ``Schema``).

A schema is what Terraform checks a configuration against before any provider call:
attribute names and types, which are required, optional or computed, and how blocks
nest. The providers written with terraform-plugin-sdk/v2 (hashicorp/kubernetes and
hashicorp/vault are) turn their Go schema into this one by fixed rules, applied by hand
in :mod:`.kubernetes` and :mod:`.vault`:

- every resource gets ``id``, optional and computed;
- ``TypeInt``/``TypeFloat`` are ``number``; a ``TypeMap`` without ``Elem`` is a map of
  strings;
- a ``TypeList``/``TypeSet`` of a nested resource is a block (nesting list/set) with the
  Go schema's ``MaxItems``; a *required* one gets ``min_items = 1`` when it has none, an
  *optional* one never has a minimum;
- a computed-only nested resource is not a block but an attribute of type
  list/set(object), because it never appears in configuration.

Types are cty's JSON type notation: ``"string"``, ``["list", "string"]``,
``["object", {"ip": "string"}]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from tests.support.tfprovider import wire

Mode = Literal["required", "optional", "computed", "optional+computed"]
Nesting = Literal["single", "list", "set"]

STRING = "string"
NUMBER = "number"
BOOL = "bool"
NESTING = {"single": 1, "list": 2, "set": 3}


def list_of(element: Any) -> list[Any]:
    return ["list", element]


def set_of(element: Any) -> list[Any]:
    return ["set", element]


def map_of(element: Any) -> list[Any]:
    return ["map", element]


def object_of(**attributes: Any) -> list[Any]:
    return ["object", attributes]


@dataclass(frozen=True)
class Attr:
    name: str
    type: Any
    mode: Mode
    sensitive: bool = False


@dataclass(frozen=True)
class Nested:
    name: str
    block: Block
    nesting: Nesting = "list"
    min_items: int = 0
    max_items: int = 0


@dataclass(frozen=True)
class Block:
    attributes: tuple[Attr, ...] = ()
    blocks: tuple[Nested, ...] = ()

    def names(self) -> list[str]:
        return [a.name for a in self.attributes] + [b.name for b in self.blocks]


# ------------------------------------------------------------------ building schemas


def required(name: str, type_: Any, *, sensitive: bool = False) -> Attr:
    return Attr(name, type_, "required", sensitive)


def optional(name: str, type_: Any, *, sensitive: bool = False) -> Attr:
    return Attr(name, type_, "optional", sensitive)


def optional_computed(name: str, type_: Any, *, sensitive: bool = False) -> Attr:
    return Attr(name, type_, "optional+computed", sensitive)


def computed(name: str, type_: Any) -> Attr:
    return Attr(name, type_, "computed")


def block(*members: Attr | Nested) -> Block:
    attributes = tuple(sorted((m for m in members if isinstance(m, Attr)), key=_name))
    blocks = tuple(sorted((m for m in members if isinstance(m, Nested)), key=_name))
    names = [m.name for m in members]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"defined twice: {sorted(duplicates)}")
    return Block(attributes, blocks)


def nested(
    name: str,
    *members: Attr | Nested,
    nesting: Nesting = "list",
    min_items: int = 0,
    max_items: int = 0,
) -> Nested:
    return Nested(name, block(*members), nesting, min_items, max_items)


def resource(*members: Attr | Nested) -> Block:
    """A managed resource or data source of an SDKv2 provider: ``id`` is added."""
    return block(optional_computed("id", STRING), *members)


def _name(member: Attr | Nested) -> str:
    return member.name


# ------------------------------------------------------------------ wire encoding


def _attribute(a: Attr) -> bytes:
    return (
        wire.text(1, a.name)
        + wire.raw(2, json.dumps(a.type, separators=(",", ":")).encode())
        + wire.integer(4, a.mode == "required")
        + wire.integer(5, a.mode in ("optional", "optional+computed"))
        + wire.integer(6, a.mode in ("computed", "optional+computed"))
        + wire.integer(7, a.sensitive)
    )


def _block(b: Block) -> bytes:
    out = b"".join(wire.raw(2, _attribute(a)) for a in b.attributes)
    for n in b.blocks:
        out += wire.raw(
            3,
            wire.text(1, n.name)
            + wire.raw(2, _block(n.block))
            + wire.integer(3, NESTING[n.nesting])
            + wire.integer(4, n.min_items)
            + wire.integer(5, n.max_items),
        )
    return out


def _schema(b: Block, version: int = 0) -> bytes:
    """tfplugin6 ``Schema``: {1: version, 2: Block}."""
    return wire.integer(1, version) + wire.raw(2, _block(b))


@dataclass(frozen=True)
class ProviderSchema:
    """What ``GetProviderSchema`` answers: the provider's own configuration block, its
    managed resources and data sources (name -> (schema version, block))."""

    provider: Block
    resources: dict[str, tuple[int, Block]]
    data_sources: dict[str, tuple[int, Block]]

    def encode(self) -> bytes:
        """tfplugin6 ``GetProviderSchema.Response``: {1: provider, 2: map resource_schemas,
        3: map data_source_schemas}; no diagnostics, no functions."""
        out = wire.raw(1, _schema(self.provider))
        for name, (version, b) in sorted(self.resources.items()):
            out += wire.entry(2, name, _schema(b, version))
        for name, (version, b) in sorted(self.data_sources.items()):
            out += wire.entry(3, name, _schema(b, version))
        return out
