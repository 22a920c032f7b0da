"""hashicorp/kubernetes 2.31.0: metadata and label selectors (kubernetes/schema_metadata.go,
schema_label_selector.go), shared by every resource of :mod:`.kubernetes`."""

from __future__ import annotations

from tests.support.tfprovider.schema import (
    NUMBER,
    STRING,
    Nested,
    computed,
    map_of,
    nested,
    optional,
    optional_computed,
    set_of,
)


def metadata(*, namespaced: bool, generate_name: bool = True) -> Nested:
    """metadataSchema / namespacedMetadataSchema: required, one block."""
    members = [
        optional("annotations", map_of(STRING)),
        computed("generation", NUMBER),
        optional("labels", map_of(STRING)),
        optional_computed("name", STRING),
        computed("resource_version", STRING),
        computed("uid", STRING),
    ]
    if namespaced:
        members.append(optional("namespace", STRING))
    if generate_name:
        members.append(optional("generate_name", STRING))
    return nested("metadata", *members, min_items=1, max_items=1)


def label_selector(name: str, *, max_items: int = 0, min_items: int = 0) -> Nested:
    """labelSelectorFields."""
    return nested(
        name,
        nested(
            "match_expressions",
            optional("key", STRING),
            optional("operator", STRING),
            optional("values", set_of(STRING)),
        ),
        optional("match_labels", map_of(STRING)),
        max_items=max_items,
        min_items=min_items,
    )
