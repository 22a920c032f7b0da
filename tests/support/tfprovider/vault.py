"""hashicorp/vault 4.2.0, the part the fedgate modules use.

Transcribed from the provider's Go schema at tag v4.2.0 (internal/provider/provider.go,
vault/resource_auth_backend.go, resource_kubernetes_auth_backend_{config,role}.go,
resource_pki_secret_backend_role.go, resource_policy.go, auth_token.go) by the rules in
:mod:`.schema`. Every resource is complete, with the ``namespace`` argument the provider
adds to each (UpdateSchemaResource); the provider block has its plain arguments, not the
``auth_login*`` blocks. ``address`` is required as the real provider makes it when
``VAULT_ADDR`` is unset (a DefaultFunc of nil); ``token`` defaults to "" and so is optional.
"""

from __future__ import annotations

import os

from tests.support.tfprovider.schema import (
    BOOL,
    NUMBER,
    STRING,
    Attr,
    Block,
    ProviderSchema,
    block,
    computed,
    list_of,
    nested,
    optional,
    optional_computed,
    required,
    resource,
    set_of,
)

VERSION = "4.2.0"
SOURCE = "registry.terraform.io/hashicorp/vault"


def _provider() -> Block:
    address = optional("address", STRING) if os.environ.get("VAULT_ADDR") else None
    return block(
        address or required("address", STRING),
        optional("add_address_to_env", STRING),
        optional("token", STRING),
        optional("token_name", STRING),
        optional("skip_child_token", BOOL),
        optional("ca_cert_file", STRING),
        optional("ca_cert_dir", STRING),
        nested(
            "client_auth",
            required("cert_file", STRING),
            required("key_file", STRING),
            max_items=1,
        ),
        optional("skip_tls_verify", BOOL),
        optional("tls_server_name", STRING),
        optional("max_lease_ttl_seconds", NUMBER),
        optional("max_retries", NUMBER),
        optional("max_retries_ccc", NUMBER),
        optional("namespace", STRING),
        optional("set_namespace_from_token", BOOL),
        nested("headers", required("name", STRING), required("value", STRING)),
        optional("skip_get_vault_version", BOOL),
        optional("vault_version_override", STRING),
    )


NAMESPACE = optional("namespace", STRING)


def _token_fields() -> tuple[Attr, ...]:
    """addTokenFields (auth_token.go)."""
    return (
        optional("token_bound_cidrs", set_of(STRING)),
        optional("token_explicit_max_ttl", NUMBER),
        optional("token_max_ttl", NUMBER),
        optional("token_no_default_policy", BOOL),
        optional("token_period", NUMBER),
        optional("token_policies", set_of(STRING)),
        optional("token_type", STRING),
        optional("token_ttl", NUMBER),
        optional("token_num_uses", NUMBER),
    )


def _list(*names: str) -> tuple[Attr, ...]:
    return tuple(optional(n, list_of(STRING)) for n in names)


def _flags(*names: str) -> tuple[Attr, ...]:
    return tuple(optional(n, BOOL) for n in names)


RESOURCES: dict[str, tuple[int, Block]] = {
    "vault_auth_backend": (
        1,
        resource(
            NAMESPACE,
            required("type", STRING),
            optional_computed("path", STRING),
            optional("description", STRING),
            optional("local", BOOL),
            computed("accessor", STRING),
            optional("disable_remount", BOOL),
            nested(
                "tune",
                optional("default_lease_ttl", STRING),
                optional("max_lease_ttl", STRING),
                optional("audit_non_hmac_request_keys", list_of(STRING)),
                optional("audit_non_hmac_response_keys", list_of(STRING)),
                optional("listing_visibility", STRING),
                optional("passthrough_request_headers", list_of(STRING)),
                optional("allowed_response_headers", list_of(STRING)),
                optional("token_type", STRING),
                nesting="set",
                max_items=1,
            ),
        ),
    ),
    "vault_kubernetes_auth_backend_config": (
        0,
        resource(
            NAMESPACE,
            required("kubernetes_host", STRING),
            optional_computed("kubernetes_ca_cert", STRING),
            optional("token_reviewer_jwt", STRING, sensitive=True),
            optional("pem_keys", list_of(STRING)),
            optional("backend", STRING),
            optional("issuer", STRING),
            optional_computed("disable_iss_validation", BOOL),
            optional_computed("disable_local_ca_jwt", BOOL),
        ),
    ),
    "vault_kubernetes_auth_backend_role": (
        0,
        resource(
            NAMESPACE,
            required("role_name", STRING),
            required("bound_service_account_names", set_of(STRING)),
            required("bound_service_account_namespaces", set_of(STRING)),
            optional("backend", STRING),
            optional("audience", STRING),
            optional_computed("alias_name_source", STRING),
            *_token_fields(),
        ),
    ),
    "vault_policy": (
        0,
        resource(NAMESPACE, required("name", STRING), required("policy", STRING)),
    ),
    "vault_pki_secret_backend_role": (
        0,
        resource(
            NAMESPACE,
            required("backend", STRING),
            required("name", STRING),
            optional_computed("issuer_ref", STRING),
            optional_computed("ttl", STRING),
            optional_computed("max_ttl", STRING),
            optional_computed("allowed_uri_sans_template", BOOL),
            optional_computed("key_usage", list_of(STRING)),
            optional_computed("not_before_duration", STRING),
            optional("key_type", STRING),
            optional("key_bits", NUMBER),
            *_flags(
                "allow_localhost",
                "allowed_domains_template",
                "allow_bare_domains",
                "allow_subdomains",
                "allow_glob_domains",
                "allow_any_name",
                "enforce_hostnames",
                "allow_ip_sans",
                "allow_wildcard_certificates",
                "server_flag",
                "client_flag",
                "code_signing_flag",
                "email_protection_flag",
                "use_csr_common_name",
                "use_csr_sans",
                "generate_lease",
                "no_store",
                "require_cn",
                "basic_constraints_valid_for_non_ca",
            ),
            *_list(
                "allowed_domains",
                "allowed_uri_sans",
                "allowed_other_sans",
                "ext_key_usage",
                "ext_key_usage_oids",
                "ou",
                "organization",
                "country",
                "locality",
                "province",
                "street_address",
                "postal_code",
                "policy_identifiers",
                "allowed_serial_numbers",
                "allowed_user_ids",
            ),
            nested(
                "policy_identifier",
                required("oid", STRING),
                optional("cps", STRING),
                optional("notice", STRING),
                nesting="set",
            ),
        ),
    ),
}


def schema() -> ProviderSchema:
    return ProviderSchema(provider=_provider(), resources=RESOURCES, data_sources={})
