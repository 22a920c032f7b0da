"""hashicorp/kubernetes 2.31.0: the pod template of a Deployment (podSpecFields,
containerFields, volumeSchema, the affinity fields; kubernetes/schema_pod_spec.go,
schema_container.go, schema_affinity_spec.go), transcribed as :mod:`.kubernetes` says."""

from __future__ import annotations

from tests.support.tfprovider.kubernetes_meta import label_selector
from tests.support.tfprovider.schema import (
    BOOL,
    NUMBER,
    STRING,
    Nested,
    list_of,
    map_of,
    nested,
    optional,
    optional_computed,
    required,
    set_of,
)


def _handler() -> tuple[Nested, ...]:
    """lifecycleHandlerFields."""
    return (
        nested("exec", optional("command", list_of(STRING)), max_items=1),
        nested(
            "http_get",
            optional("host", STRING),
            optional("path", STRING),
            optional("scheme", STRING),
            optional("port", STRING),
            nested("http_header", optional("name", STRING), optional("value", STRING)),
            max_items=1,
        ),
        nested("tcp_socket", required("port", STRING)),
    )


def _probe(name: str) -> Nested:
    """probeSchema: a handler, grpc, and the thresholds."""
    return nested(
        name,
        *_handler(),
        nested("grpc", required("port", NUMBER), optional("service", STRING)),
        optional("failure_threshold", NUMBER),
        optional("initial_delay_seconds", NUMBER),
        optional("period_seconds", NUMBER),
        optional("success_threshold", NUMBER),
        optional("timeout_seconds", NUMBER),
        max_items=1,
    )


def _seccomp_profile() -> Nested:
    return nested(
        "seccomp_profile",
        optional("localhost_profile", STRING),
        optional("type", STRING),
        max_items=1,
    )


def _se_linux_options() -> Nested:
    return nested(
        "se_linux_options",
        optional("level", STRING),
        optional("role", STRING),
        optional("type", STRING),
        optional("user", STRING),
        max_items=1,
    )


_KEY_REF = (optional("key", STRING), optional("name", STRING), optional("optional", BOOL))
_REF = (required("name", STRING), optional("optional", BOOL))


def _container(name: str) -> Nested:
    """containerFields (container and init_container)."""
    return nested(
        name,
        required("name", STRING),
        optional("image", STRING),
        optional_computed("image_pull_policy", STRING),
        optional("args", list_of(STRING)),
        optional("command", list_of(STRING)),
        optional("working_dir", STRING),
        optional("stdin", BOOL),
        optional("stdin_once", BOOL),
        optional("tty", BOOL),
        optional("termination_message_path", STRING),
        optional_computed("termination_message_policy", STRING),
        nested(
            "port",
            required("container_port", NUMBER),
            optional("host_ip", STRING),
            optional("host_port", NUMBER),
            optional("name", STRING),
            optional("protocol", STRING),
        ),
        nested(
            "env",
            required("name", STRING),
            optional("value", STRING),
            nested(
                "value_from",
                nested("config_map_key_ref", *_KEY_REF, max_items=1),
                nested(
                    "field_ref",
                    optional("api_version", STRING),
                    optional("field_path", STRING),
                    max_items=1,
                ),
                nested(
                    "resource_field_ref",
                    optional("container_name", STRING),
                    optional("divisor", STRING),
                    required("resource", STRING),
                    max_items=1,
                ),
                nested("secret_key_ref", *_KEY_REF, max_items=1),
                max_items=1,
            ),
        ),
        nested(
            "env_from",
            nested("config_map_ref", *_REF, max_items=1),
            optional("prefix", STRING),
            nested("secret_ref", *_REF, max_items=1),
        ),
        nested(
            "lifecycle",
            nested("post_start", *_handler()),
            nested("pre_stop", *_handler()),
            max_items=1,
        ),
        _probe("liveness_probe"),
        _probe("readiness_probe"),
        _probe("startup_probe"),
        nested(
            "resources",
            optional_computed("limits", map_of(STRING)),
            optional_computed("requests", map_of(STRING)),
            max_items=1,
        ),
        nested(
            "security_context",
            optional("allow_privilege_escalation", BOOL),
            nested(
                "capabilities",
                optional("add", list_of(STRING)),
                optional("drop", list_of(STRING)),
                max_items=1,
            ),
            optional("privileged", BOOL),
            optional("read_only_root_filesystem", BOOL),
            optional("run_as_group", STRING),
            optional("run_as_non_root", BOOL),
            optional("run_as_user", STRING),
            _seccomp_profile(),
            _se_linux_options(),
            max_items=1,
        ),
        nested(
            "volume_mount",
            required("mount_path", STRING),
            required("name", STRING),
            optional("read_only", BOOL),
            optional("sub_path", STRING),
            optional("mount_propagation", STRING),
        ),
    )


_ITEMS = nested(
    "items", optional("key", STRING), optional("mode", STRING), optional("path", STRING)
)

# volumeSchema: name and the volume sources a configuration file, a secret and scratch
# space need; the provider's other sources (persistent_volume_claim, projected, csi,
# host_path, nfs, ...) are not transcribed
VOLUME = nested(
    "volume",
    optional("name", STRING),
    nested(
        "config_map",
        _ITEMS,
        optional("default_mode", STRING),
        optional("optional", BOOL),
        optional("name", STRING),
        max_items=1,
    ),
    nested(
        "secret",
        _ITEMS,
        optional("default_mode", STRING),
        optional("optional", BOOL),
        optional("secret_name", STRING),
        max_items=1,
    ),
    nested("empty_dir", optional("medium", STRING), optional("size_limit", STRING), max_items=1),
)


def _node_affinity() -> Nested:
    """nodeAffinityFields."""
    requirements = (
        nested(
            "match_expressions",
            optional("key", STRING),
            optional("operator", STRING),
            optional("values", set_of(STRING)),
        ),
        nested(
            "match_fields",
            required("key", STRING),
            required("operator", STRING),
            optional("values", set_of(STRING)),
        ),
    )
    return nested(
        "node_affinity",
        nested(
            "required_during_scheduling_ignored_during_execution",
            nested("node_selector_term", *requirements),
            max_items=1,
        ),
        nested(
            "preferred_during_scheduling_ignored_during_execution",
            required("weight", NUMBER),
            nested("preference", *requirements, min_items=1, max_items=1),
        ),
        max_items=1,
    )


def _pod_affinity(name: str) -> Nested:
    """podAffinityFields (pod_affinity and pod_anti_affinity)."""
    term = (
        label_selector("label_selector"),
        optional("namespaces", set_of(STRING)),
        required("topology_key", STRING),
    )
    return nested(
        name,
        nested("required_during_scheduling_ignored_during_execution", *term),
        nested(
            "preferred_during_scheduling_ignored_during_execution",
            required("weight", NUMBER),
            nested("pod_affinity_term", *term, min_items=1, max_items=1),
        ),
        max_items=1,
    )


# podSpecFields(isUpdatable=true, isComputed=false), as a Deployment's template has it
POD_SPEC = nested(
    "spec",
    optional("active_deadline_seconds", NUMBER),
    nested(
        "affinity",
        _node_affinity(),
        _pod_affinity("pod_affinity"),
        _pod_affinity("pod_anti_affinity"),
        max_items=1,
    ),
    optional("automount_service_account_token", BOOL),
    _container("container"),
    nested(
        "dns_config",
        optional("nameservers", list_of(STRING)),
        nested("option", required("name", STRING), optional("value", STRING)),
        optional("searches", list_of(STRING)),
        max_items=1,
    ),
    optional("dns_policy", STRING),
    optional("enable_service_links", BOOL),
    nested("host_aliases", required("hostnames", list_of(STRING)), required("ip", STRING)),
    optional("host_ipc", BOOL),
    optional("host_network", BOOL),
    optional("host_pid", BOOL),
    optional_computed("hostname", STRING),
    nested("image_pull_secrets", required("name", STRING)),
    _container("init_container"),
    optional_computed("node_name", STRING),
    optional("node_selector", map_of(STRING)),
    nested("os", required("name", STRING), max_items=1),
    optional("priority_class_name", STRING),
    nested("readiness_gate", required("condition_type", STRING)),
    optional("restart_policy", STRING),
    optional("runtime_class_name", STRING),
    optional_computed("scheduler_name", STRING),
    nested(
        "security_context",
        optional("fs_group", STRING),
        optional("fs_group_change_policy", STRING),
        optional("run_as_group", STRING),
        optional("run_as_non_root", BOOL),
        optional("run_as_user", STRING),
        _seccomp_profile(),
        _se_linux_options(),
        optional("supplemental_groups", set_of(NUMBER)),
        nested("sysctl", required("name", STRING), required("value", STRING)),
        nested(
            "windows_options",
            optional("gmsa_credential_spec", STRING),
            optional("gmsa_credential_spec_name", STRING),
            optional("host_process", BOOL),
            optional("run_as_username", STRING),
            max_items=1,
        ),
        max_items=1,
    ),
    optional_computed("service_account_name", STRING),
    optional("share_process_namespace", BOOL),
    optional("subdomain", STRING),
    optional("termination_grace_period_seconds", NUMBER),
    nested(
        "toleration",
        optional("effect", STRING),
        optional("key", STRING),
        optional("operator", STRING),
        optional("toleration_seconds", STRING),
        optional("value", STRING),
    ),
    nested(
        "topology_spread_constraint",
        optional("match_label_keys", set_of(STRING)),
        optional("max_skew", NUMBER),
        optional("min_domains", NUMBER),
        optional("node_affinity_policy", STRING),
        optional("node_taints_policy", STRING),
        optional("topology_key", STRING),
        optional("when_unsatisfiable", STRING),
        label_selector("label_selector"),
    ),
    VOLUME,
    min_items=1,
    max_items=1,
)
