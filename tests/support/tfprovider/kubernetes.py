"""hashicorp/kubernetes 2.31.0, the part the fedgate modules use.

Transcribed from the provider's Go schema at tag v2.31.0 (kubernetes/schema_*.go and
resource_kubernetes_*_v1.go) by the rules in :mod:`.schema`. Complete for the provider
block, metadata, and the Namespace, ServiceAccount, ConfigMap, Secret, RBAC, Service,
Deployment (pod spec and containers included), PodDisruptionBudget,
HorizontalPodAutoscaler v2 and NetworkPolicy resources, except two things: the volume
sources other than config_map, secret and empty_dir (one missing here fails `terraform
validate` as "Unsupported block type": add it from the provider's Go schema), and the
``timeouts`` blocks. Defaults (Go ``Default:``) and value checks (``ValidateFunc``) are
the provider's business at plan time, not the schema's, and are not here.
"""

from __future__ import annotations

from tests.support.tfprovider.kubernetes_meta import label_selector, metadata
from tests.support.tfprovider.kubernetes_pod import POD_SPEC
from tests.support.tfprovider.schema import (
    BOOL,
    NUMBER,
    STRING,
    Block,
    Nested,
    ProviderSchema,
    block,
    computed,
    list_of,
    map_of,
    nested,
    object_of,
    optional,
    optional_computed,
    required,
    resource,
    set_of,
)

VERSION = "2.31.0"
SOURCE = "registry.terraform.io/hashicorp/kubernetes"

PROVIDER = block(  # the provider block (no id)
    optional("host", STRING),
    optional("username", STRING),
    optional("password", STRING),
    optional("insecure", BOOL),
    optional("tls_server_name", STRING),
    optional("client_certificate", STRING),
    optional("client_key", STRING),
    optional("cluster_ca_certificate", STRING),
    optional("config_paths", list_of(STRING)),
    optional("config_path", STRING),
    optional("config_context", STRING),
    optional("config_context_auth_info", STRING),
    optional("config_context_cluster", STRING),
    optional("token", STRING),
    optional("proxy_url", STRING),
    optional("ignore_annotations", list_of(STRING)),
    optional("ignore_labels", list_of(STRING)),
    nested(
        "exec",
        required("api_version", STRING),
        required("command", STRING),
        optional("env", map_of(STRING)),
        optional("args", list_of(STRING)),
        max_items=1,
    ),
    nested("experiments", optional("manifest_resource", BOOL), max_items=1),
)


# ------------------------------------------------------------------------ resources


def _deployment() -> Block:
    return resource(
        metadata(namespaced=True),
        nested(
            "spec",
            optional("min_ready_seconds", NUMBER),
            optional("paused", BOOL),
            optional("progress_deadline_seconds", NUMBER),
            optional_computed("replicas", STRING),
            optional("revision_history_limit", NUMBER),
            label_selector("selector", max_items=1),
            nested(
                "strategy",
                optional("type", STRING),
                nested(
                    "rolling_update",
                    optional("max_surge", STRING),
                    optional("max_unavailable", STRING),
                    max_items=1,
                ),
                max_items=1,
            ),
            nested(
                "template",
                metadata(namespaced=True),
                POD_SPEC,
                min_items=1,
                max_items=1,
            ),
            min_items=1,
            max_items=1,
        ),
        optional("wait_for_rollout", BOOL),
    )


def _service() -> Block:
    ingress = object_of(ip=STRING, hostname=STRING)
    return resource(
        metadata(namespaced=True),
        nested(
            "spec",
            optional("allocate_load_balancer_node_ports", BOOL),
            optional_computed("cluster_ip", STRING),
            optional_computed("cluster_ips", list_of(STRING)),
            optional("external_ips", set_of(STRING)),
            optional("external_name", STRING),
            optional_computed("external_traffic_policy", STRING),
            optional_computed("ip_families", list_of(STRING)),
            optional_computed("ip_family_policy", STRING),
            optional_computed("internal_traffic_policy", STRING),
            optional("load_balancer_class", STRING),
            optional("load_balancer_ip", STRING),
            optional("load_balancer_source_ranges", set_of(STRING)),
            nested(
                "port",
                optional("app_protocol", STRING),
                optional("name", STRING),
                optional_computed("node_port", NUMBER),
                required("port", NUMBER),
                optional("protocol", STRING),
                optional_computed("target_port", STRING),
            ),
            optional("publish_not_ready_addresses", BOOL),
            optional("selector", map_of(STRING)),
            optional("session_affinity", STRING),
            nested(
                "session_affinity_config",
                nested(
                    "client_ip",
                    optional_computed("timeout_seconds", NUMBER),
                    max_items=1,
                ),
                max_items=1,
            ),
            optional("type", STRING),
            optional_computed("health_check_node_port", NUMBER),
            min_items=1,
            max_items=1,
        ),
        optional("wait_for_load_balancer", BOOL),
        computed(
            "status",
            list_of(object_of(load_balancer=list_of(object_of(ingress=list_of(ingress))))),
        ),
    )


RULE_MEMBERS = (
    optional("api_groups", list_of(STRING)),
    optional("non_resource_urls", list_of(STRING)),
    optional("resource_names", list_of(STRING)),
    optional("resources", list_of(STRING)),
    required("verbs", list_of(STRING)),
)

ROLE_REF = nested(
    "role_ref",
    required("api_group", STRING),
    required("kind", STRING),
    required("name", STRING),
    min_items=1,
    max_items=1,
)

SUBJECT = nested(
    "subject",
    optional_computed("api_group", STRING),
    required("kind", STRING),
    required("name", STRING),
    optional("namespace", STRING),
    min_items=1,
)


def _peers(name: str) -> Nested:
    return nested(
        name,
        nested(
            "ip_block",
            optional("cidr", STRING),
            optional("except", list_of(STRING)),
            max_items=1,
        ),
        label_selector("namespace_selector", max_items=1),
        label_selector("pod_selector", max_items=1),
    )


def _network_rule(name: str, peers: str) -> Nested:
    return nested(
        name,
        nested("ports", optional("port", STRING), optional("protocol", STRING)),
        _peers(peers),
    )


def _hpa_v2() -> Block:
    target = nested(
        "target",
        optional("average_utilization", NUMBER),
        optional("average_value", STRING),
        required("type", STRING),
        optional("value", STRING),
        max_items=1,
    )
    metric_id = nested(
        "metric",
        required("name", STRING),
        label_selector("selector"),
        min_items=1,
        max_items=1,
    )
    scaling_rules = (
        nested(
            "policy",
            required("period_seconds", NUMBER),
            required("type", STRING),
            required("value", NUMBER),
            min_items=1,
        ),
        optional("select_policy", STRING),
        optional("stabilization_window_seconds", NUMBER),
    )
    return resource(
        metadata(namespaced=True),
        nested(
            "spec",
            required("max_replicas", NUMBER),
            optional("min_replicas", NUMBER),
            optional_computed("target_cpu_utilization_percentage", NUMBER),
            nested(
                "metric",
                nested(
                    "container_resource",
                    required("container", STRING),
                    required("name", STRING),
                    target,
                    max_items=1,
                ),
                nested("external", metric_id, target, max_items=1),
                nested(
                    "object",
                    nested(
                        "described_object",
                        required("api_version", STRING),
                        required("kind", STRING),
                        required("name", STRING),
                        min_items=1,
                        max_items=1,
                    ),
                    metric_id,
                    target,
                    max_items=1,
                ),
                nested("pods", metric_id, target, max_items=1),
                nested("resource", required("name", STRING), target, max_items=1),
                required("type", STRING),
            ),
            nested(
                "behavior",
                nested("scale_up", *scaling_rules),
                nested("scale_down", *scaling_rules),
                max_items=1,
            ),
            nested(
                "scale_target_ref",
                optional("api_version", STRING),
                required("kind", STRING),
                required("name", STRING),
                min_items=1,
                max_items=1,
            ),
            min_items=1,
            max_items=1,
        ),
    )


RESOURCES: dict[str, tuple[int, Block]] = {
    "kubernetes_namespace_v1": (
        0,
        resource(
            metadata(namespaced=False),
            optional("wait_for_default_service_account", BOOL),
        ),
    ),
    "kubernetes_service_account_v1": (
        0,
        resource(
            metadata(namespaced=True),
            nested("image_pull_secret", optional("name", STRING), nesting="set"),
            nested("secret", optional("name", STRING), nesting="set"),
            optional("automount_service_account_token", BOOL),
            computed("default_secret_name", STRING),
        ),
    ),
    "kubernetes_config_map_v1": (
        0,
        resource(
            metadata(namespaced=True),
            optional("binary_data", map_of(STRING)),
            optional("data", map_of(STRING)),
            optional("immutable", BOOL),
        ),
    ),
    "kubernetes_secret_v1": (
        0,
        resource(
            metadata(namespaced=True),
            optional_computed("data", map_of(STRING), sensitive=True),
            optional("binary_data", map_of(STRING), sensitive=True),
            optional("immutable", BOOL),
            optional("type", STRING),
            optional("wait_for_service_account_token", BOOL),
        ),
    ),
    "kubernetes_cluster_role_v1": (
        0,
        resource(
            metadata(namespaced=False),
            nested("rule", *RULE_MEMBERS),
            nested(
                "aggregation_rule",
                label_selector("cluster_role_selectors"),
                max_items=1,
            ),
        ),
    ),
    "kubernetes_role_binding_v1": (
        0,
        resource(metadata(namespaced=True), ROLE_REF, SUBJECT),
    ),
    "kubernetes_cluster_role_binding_v1": (
        0,
        resource(metadata(namespaced=False), ROLE_REF, SUBJECT),
    ),
    "kubernetes_deployment_v1": (1, _deployment()),
    "kubernetes_service_v1": (1, _service()),
    "kubernetes_pod_disruption_budget_v1": (
        0,
        resource(
            metadata(namespaced=True),
            nested(
                "spec",
                optional("max_unavailable", STRING),
                optional("min_available", STRING),
                label_selector("selector", min_items=1, max_items=1),
                min_items=1,
                max_items=1,
            ),
        ),
    ),
    "kubernetes_horizontal_pod_autoscaler_v2": (0, _hpa_v2()),
    "kubernetes_network_policy_v1": (
        0,
        resource(
            metadata(namespaced=True),
            nested(
                "spec",
                _network_rule("ingress", "from"),
                _network_rule("egress", "to"),
                label_selector("pod_selector", min_items=1, max_items=1),
                required("policy_types", list_of(STRING)),
                min_items=1,
                max_items=1,
            ),
        ),
    ),
}

SCHEMA = ProviderSchema(provider=PROVIDER, resources=RESOURCES, data_sources={})
