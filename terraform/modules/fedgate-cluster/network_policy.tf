# Who may reach the gateway pods: anyone on the public, east-west and DNS listeners
# (clients, other clusters' gateways, which mutual TLS then checks; resolvers), and on the admin listener only
# the metrics scraper and the operators' networks. Kubelet probes come from the node and
# are not filtered by NetworkPolicy in the common CNIs.

locals {
  open_ports = [
    for p in [local.port.public, local.port.public_tls, local.port.east_west] : tostring(p)
    if p != null
  ]
  admin_allowed = length(var.admin_allowed_cidrs) > 0 || var.metrics_scraper != null
}

resource "kubernetes_network_policy_v1" "gateway" {
  count = var.network_policy ? 1 : 0

  metadata {
    name      = "${var.name}-gateway"
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    pod_selector {
      match_labels = local.selector
    }
    policy_types = ["Ingress"]

    ingress {
      dynamic "ports" {
        for_each = local.open_ports
        content {
          port     = ports.value
          protocol = "TCP"
        }
      }
      # the DNS listener, when listen.dns is on: resolvers anywhere, UDP and TCP
      dynamic "ports" {
        for_each = local.port.dns == null ? [] : ["UDP", "TCP"]
        content {
          port     = tostring(local.port.dns)
          protocol = ports.value
        }
      }
    }

    # no rule at all when nobody is named: the admin port is then closed to the network
    dynamic "ingress" {
      for_each = local.admin_allowed ? [1] : []
      content {
        ports {
          port     = tostring(local.port.admin)
          protocol = "TCP"
        }
        dynamic "from" {
          for_each = var.admin_allowed_cidrs
          content {
            ip_block {
              cidr = from.value
            }
          }
        }
        dynamic "from" {
          for_each = var.metrics_scraper == null ? [] : [var.metrics_scraper]
          content {
            namespace_selector {
              match_labels = from.value.namespace_labels
            }
            pod_selector {
              match_labels = from.value.pod_labels
            }
          }
        }
      }
    }
  }
}
