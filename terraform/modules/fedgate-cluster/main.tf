# One gateway fleet in one cluster: Kubernetes objects through the kubernetes provider
# (aliased by the caller to this cluster) and this cluster's side of Vault.

# what the pod takes from gateway.yaml (ports, files, probe scheme, etcd TLS): pod_settings.tf

locals {
  selector = {
    "app.kubernetes.io/name"     = "fedgate"
    "app.kubernetes.io/instance" = var.name
  }

  labels = merge(var.labels, local.selector, {
    "app.kubernetes.io/component"  = "gateway"
    "app.kubernetes.io/managed-by" = "terraform"
    "fedgate.io/cluster"           = var.cluster.name
  })

  namespace = var.create_namespace ? kubernetes_namespace_v1.this[0].metadata[0].name : var.namespace
}

# ------------------------------------------------------------------ namespace and identity

resource "kubernetes_namespace_v1" "this" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name   = var.namespace
    labels = merge(var.labels, { "app.kubernetes.io/managed-by" = "terraform" })
  }
}

resource "kubernetes_service_account_v1" "gateway" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }
  automount_service_account_token = true
}

# Discovery reads EndpointSlices, only in the namespaces the manifest lists for this
# cluster: a ClusterRole bound by a RoleBinding in each of those namespaces.
resource "kubernetes_cluster_role_v1" "discovery" {
  metadata {
    name   = "${var.name}-${var.cluster.name}-endpointslices"
    labels = local.labels
  }

  rule {
    api_groups = ["discovery.k8s.io"]
    resources  = ["endpointslices"]
    verbs      = ["get", "list", "watch"]
  }
}

resource "kubernetes_role_binding_v1" "discovery" {
  for_each = toset(var.cluster.namespaces)

  metadata {
    name      = "${var.name}-endpointslices"
    namespace = each.value
    labels    = local.labels
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = kubernetes_cluster_role_v1.discovery.metadata[0].name
  }

  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.gateway.metadata[0].name
    namespace = local.namespace
  }
}

# Vault's Kubernetes auth reviews the gateway's own token (no long-lived reviewer JWT):
# the service account may create TokenReviews.
resource "kubernetes_cluster_role_binding_v1" "token_review" {
  metadata {
    name   = "${var.name}-${var.cluster.name}-auth-delegator"
    labels = local.labels
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "ClusterRole"
    name      = "system:auth-delegator"
  }

  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.gateway.metadata[0].name
    namespace = local.namespace
  }
}

# ------------------------------------------------------------------------ configuration

resource "kubernetes_config_map_v1" "settings" {
  metadata {
    name      = "${var.name}-settings"
    namespace = local.namespace
    labels    = local.labels
  }

  data = {
    "gateway.yaml" = var.settings_yaml
  }
}

resource "kubernetes_secret_v1" "admin_token" {
  # per cluster; none when admin_token_secret names one made outside Terraform (the token
  # then never enters the Terraform state)
  count = var.admin_token_secret == null ? 1 : 0

  metadata {
    name      = "${var.name}-admin-token"
    namespace = local.namespace
    labels    = local.labels
  }

  data = {
    (basename(local.token_file)) = var.admin_token
  }

  type = "Opaque"
}

# Vault's CA, mounted where the settings' vault.caCert says
resource "kubernetes_secret_v1" "vault_ca" {
  count = local.vault_ca == null ? 0 : 1

  metadata {
    name      = "${var.name}-vault-ca"
    namespace = local.namespace
    labels    = local.labels
  }

  data = {
    (basename(local.vault_ca)) = coalesce(var.vault_ca_cert_pem, "-")
  }

  type = "Opaque"

  lifecycle {
    precondition {
      condition     = var.vault_ca_cert_pem != null
      error_message = "The settings name vault.caCert: give vault_ca_cert_pem (the PEM mounted at that path)."
    }
  }
}

# etcd's CA, mounted in the folder of etcd.tls.ca (when etcd_ca_cert_pem is given;
# otherwise the ca.crt of etcd_client_secret)
resource "kubernetes_secret_v1" "etcd_ca" {
  count = local.etcd_ca != null && var.etcd_ca_cert_pem != null ? 1 : 0

  metadata {
    name      = "${var.name}-etcd-ca"
    namespace = local.namespace
    labels    = local.labels
  }

  data = {
    (basename(local.etcd_ca)) = var.etcd_ca_cert_pem
  }

  type = "Opaque"
}

# --------------------------------------------------------------------------- the fleet

resource "kubernetes_deployment_v1" "gateway" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }

  # the HPA owns the replica count after the first apply
  lifecycle {
    ignore_changes = [spec[0].replicas]

    precondition {
      condition     = local.vault_ca == null || var.vault_ca_cert_pem != null
      error_message = "The settings name vault.caCert: give vault_ca_cert_pem (the PEM mounted at that path)."
    }

    precondition {
      condition     = var.max_replicas >= var.min_replicas
      error_message = "max_replicas must be at least min_replicas."
    }
  }

  spec {
    replicas = var.replicas

    selector {
      match_labels = local.selector
    }

    strategy {
      type = "RollingUpdate"
      rolling_update {
        max_surge       = "25%"
        max_unavailable = "0"
      }
    }

    template {
      metadata {
        labels = local.labels
        annotations = merge(
          {
            # a new gateway.yaml rolls the pods
            "checksum/settings" = sha256(var.settings_yaml)
          },
          var.prometheus_scrape ? {
            "prometheus.io/scrape" = "true"
            "prometheus.io/port"   = tostring(local.port.admin)
            "prometheus.io/path"   = "/metrics"
            "prometheus.io/scheme" = lower(local.admin_scheme)
          } : {},
        )
      }

      spec {
        service_account_name             = kubernetes_service_account_v1.gateway.metadata[0].name
        automount_service_account_token  = true
        termination_grace_period_seconds = var.termination_grace_period_seconds

        dynamic "image_pull_secrets" {
          for_each = var.image_pull_secrets
          content {
            name = image_pull_secrets.value
          }
        }

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          fs_group        = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
          # a DNS listener on a port under 1024 (53), without root or NET_BIND_SERVICE:
          # the pod's own network namespace lets unprivileged processes bind from there
          dynamic "sysctl" {
            for_each = local.port.dns != null && coalesce(local.port.dns, 1024) < 1024 ? [local.port.dns] : []
            content {
              name  = "net.ipv4.ip_unprivileged_port_start"
              value = tostring(sysctl.value)
            }
          }
        }

        affinity {
          pod_anti_affinity {
            # one gateway per node where possible, and spread over zones
            preferred_during_scheduling_ignored_during_execution {
              weight = 100
              pod_affinity_term {
                topology_key = "kubernetes.io/hostname"
                label_selector {
                  match_labels = local.selector
                }
              }
            }
            preferred_during_scheduling_ignored_during_execution {
              weight = 50
              pod_affinity_term {
                topology_key = "topology.kubernetes.io/zone"
                label_selector {
                  match_labels = local.selector
                }
              }
            }
          }
        }

        container {
          name              = "fedgate"
          image             = var.image
          image_pull_policy = var.image_pull_policy
          args              = ["serve", "--config", "/etc/fedgate/gateway.yaml"]

          port {
            name           = "public"
            container_port = local.port.public
            protocol       = "TCP"
          }

          dynamic "port" {
            for_each = local.port.public_tls == null ? [] : [local.port.public_tls]
            content {
              name           = "public-tls"
              container_port = port.value
              protocol       = "TCP"
            }
          }

          port {
            name           = "east-west"
            container_port = local.port.east_west
            protocol       = "TCP"
          }

          port {
            name           = "admin"
            container_port = local.port.admin
            protocol       = "TCP"
          }

          dynamic "port" {
            for_each = local.port.dns == null ? {} : { "dns" = "UDP", "dns-tcp" = "TCP" }
            content {
              name           = port.key
              container_port = local.port.dns
              protocol       = port.value
            }
          }

          # the admin API listens on the pod IP only (not 0.0.0.0); the NetworkPolicy
          # admits the scraper and the operators' CIDRs to it
          env {
            name = "POD_IP"
            value_from {
              field_ref {
                field_path = "status.podIP"
              }
            }
          }

          env {
            name  = "FEDGATE_LISTEN_ADMIN"
            value = "$(POD_IP):${local.port.admin}"
          }

          env {
            name = "FEDGATE_ID"
            value_from {
              field_ref {
                field_path = "metadata.name"
              }
            }
          }

          readiness_probe {
            http_get {
              path   = "/readyz"
              port   = "admin"
              scheme = local.admin_scheme
            }
            period_seconds    = 2
            timeout_seconds   = 1
            failure_threshold = 2
          }

          # a gateway started during a Vault outage without cached material waits for
          # Vault before it listens: up to an hour before the kubelet gives up on it
          startup_probe {
            http_get {
              path   = "/healthz"
              port   = "admin"
              scheme = local.admin_scheme
            }
            period_seconds    = 5
            timeout_seconds   = 2
            failure_threshold = 720
          }

          liveness_probe {
            http_get {
              path   = "/healthz"
              port   = "admin"
              scheme = local.admin_scheme
            }
            initial_delay_seconds = 5
            period_seconds        = 10
            timeout_seconds       = 2
            failure_threshold     = 3
          }

          resources {
            requests = var.resources.requests
            limits   = var.resources.limits
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "settings"
            mount_path = "/etc/fedgate"
            read_only  = true
          }

          volume_mount {
            name       = "admin-token"
            mount_path = local.token_dir
            read_only  = true
          }

          volume_mount {
            name       = "state"
            mount_path = dirname(local.snapshot)
          }

          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }

          dynamic "volume_mount" {
            for_each = local.vault_ca == null ? [] : [local.vault_ca]
            content {
              name       = "vault-ca"
              mount_path = dirname(volume_mount.value)
              read_only  = true
            }
          }

          dynamic "volume_mount" {
            for_each = local.etcd_ca_dir == null ? [] : [local.etcd_ca_dir]
            content {
              name       = "etcd-ca"
              mount_path = volume_mount.value
              read_only  = true
            }
          }

          # the client certificate: read-only from its Secret, or written by the gateway
          # (issued from Vault, etcd.tls.vaultRole)
          dynamic "volume_mount" {
            for_each = local.etcd_client_dir == null ? [] : [local.etcd_client_dir]
            content {
              name       = "etcd-client"
              mount_path = volume_mount.value
              read_only  = local.etcd_vault_role == null
            }
          }
        }

        volume {
          name = "settings"
          config_map {
            name = kubernetes_config_map_v1.settings.metadata[0].name
          }
        }

        volume {
          name = "admin-token"
          secret {
            secret_name = (var.admin_token_secret != null ? var.admin_token_secret
            : kubernetes_secret_v1.admin_token[0].metadata[0].name)
            default_mode = "0440" # fedgate refuses a world-readable token file
          }
        }

        volume {
          name = "state"
          empty_dir {}
        }

        volume {
          name = "tmp"
          empty_dir {}
        }

        dynamic "volume" {
          for_each = local.vault_ca == null ? [] : [local.vault_ca]
          content {
            name = "vault-ca"
            secret {
              secret_name = kubernetes_secret_v1.vault_ca[0].metadata[0].name
            }
          }
        }

        dynamic "volume" {
          for_each = local.etcd_ca == null ? [] : [local.etcd_ca]
          content {
            name = "etcd-ca"
            secret {
              secret_name = (var.etcd_ca_cert_pem != null ? kubernetes_secret_v1.etcd_ca[0].metadata[0].name
              : coalesce(var.etcd_client_secret, "-"))
              items {
                key  = var.etcd_ca_cert_pem != null ? basename(volume.value) : "ca.crt"
                path = basename(volume.value)
              }
            }
          }
        }

        # a Secret rotated in place (cert-manager, External Secrets) reaches the files
        # within the kubelet's sync period; the etcd client reconnects with them
        dynamic "volume" {
          for_each = local.etcd_cert != null && local.etcd_vault_role == null ? [local.etcd_tls] : []
          content {
            name = "etcd-client"
            secret {
              secret_name  = coalesce(var.etcd_client_secret, "-")
              default_mode = "0440"
              items {
                key  = "tls.crt"
                path = basename(volume.value.cert)
              }
              items {
                key  = "tls.key"
                path = basename(volume.value.key)
              }
            }
          }
        }

        # issued from Vault by the gateway (0600 files): in memory, gone with the pod
        dynamic "volume" {
          for_each = local.etcd_cert != null && local.etcd_vault_role != null ? [local.etcd_tls] : []
          content {
            name = "etcd-client"
            empty_dir {
              medium = "Memory"
            }
          }
        }
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "gateway" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    max_unavailable = "1"
    selector {
      match_labels = local.selector
    }
  }
}

resource "kubernetes_horizontal_pod_autoscaler_v2" "gateway" {
  metadata {
    name      = var.name
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    min_replicas = var.min_replicas
    max_replicas = var.max_replicas

    scale_target_ref {
      api_version = "apps/v1"
      kind        = "Deployment"
      name        = kubernetes_deployment_v1.gateway.metadata[0].name
    }

    metric {
      type = "Resource"
      resource {
        name = "cpu"
        target {
          type                = "Utilization"
          average_utilization = var.cpu_target_utilization
        }
      }
    }

    behavior {
      scale_down {
        stabilization_window_seconds = 300
        select_policy                = "Max"
        policy {
          type           = "Pods"
          value          = 1
          period_seconds = 60
        }
      }
    }
  }
}

# ------------------------------------------------------------------------------ Services

resource "kubernetes_service_v1" "public" {
  metadata {
    name        = var.name
    namespace   = local.namespace
    labels      = local.labels
    annotations = var.public_service_annotations
  }

  spec {
    type     = var.public_service_type
    selector = local.selector
    # keep the client address (rate limits and access lists see the real client)
    external_traffic_policy = var.public_service_type == "ClusterIP" ? null : "Local"

    port {
      name        = "http"
      port        = 80
      target_port = "public"
      protocol    = "TCP"
    }

    dynamic "port" {
      for_each = local.port.public_tls == null ? [] : [local.port.public_tls]
      content {
        name        = "https"
        port        = 443
        target_port = "public-tls"
        protocol    = "TCP"
      }
    }
  }
}

resource "kubernetes_service_v1" "east_west" {
  metadata {
    name        = "${var.name}-east-west"
    namespace   = local.namespace
    labels      = local.labels
    annotations = var.east_west_service_annotations
  }

  spec {
    type     = var.east_west_service_type
    selector = local.selector

    port {
      name        = "east-west"
      port        = local.port.east_west
      target_port = "east-west"
      protocol    = "TCP"
    }
  }
}

# The authoritative DNS listener (listen.dns): resolvers reach it on 53, UDP and TCP, at
# the address the settings' dns.advertise publishes as glue (docs/dns.md).
resource "kubernetes_service_v1" "dns" {
  count = local.port.dns == null ? 0 : 1

  metadata {
    name        = "${var.name}-dns"
    namespace   = local.namespace
    labels      = local.labels
    annotations = var.dns_service_annotations
  }

  spec {
    type     = var.dns_service_type
    selector = local.selector
    # keep the resolver's address (response-rate limiting, EDNS client subnet)
    external_traffic_policy = var.dns_service_type == "ClusterIP" ? null : "Local"

    port {
      name        = "dns"
      port        = 53
      target_port = "dns"
      protocol    = "UDP"
    }

    port {
      name        = "dns-tcp"
      port        = 53
      target_port = "dns-tcp"
      protocol    = "TCP"
    }
  }
}
