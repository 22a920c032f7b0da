output "federation" {
  description = "The federation's name (metadata.name of the manifest)."
  value       = local.manifest.name
}

output "settings" {
  description = "Per cluster: the rendered gateway.yaml (YAML text)."
  value       = { for name, s in local.settings : name => yamlencode(s) }

  precondition {
    condition     = var.etcd_tls == null ? !anytrue(local.etcd_https) : alltrue(local.etcd_https)
    error_message = "etcd_tls goes with https:// etcd endpoints, and https:// endpoints need etcd_tls (etcd's CA and a client certificate): every endpoint https:// with etcd_tls, or every endpoint http:// without."
  }
}

output "settings_objects" {
  description = "Per cluster: the same settings as an object (for assertions and composition)."
  value       = local.settings
}

output "clusters" {
  description = "Per cluster: name, region, cloud, environment, tier, east_west URL, namespaces, kubeconfig context, labels, peers (name -> east-west URL), Vault names and etcd_user (the etcd role, user and client certificate CN of its gateways: fedgate-gateway-<cluster>)."
  value = {
    for name, c in local.clusters : name => merge(c, {
      peers     = local.peers[name]
      vault     = local.vault_names[name]
      etcd_user = local.etcd_user[name]
    })
  }
}

output "peers" {
  description = "Per cluster: the other clusters' east-west addresses (name -> URL)."
  value       = local.peers
}

output "tiers" {
  description = "Per cluster: its failover tier."
  value       = { for name, c in local.clusters : name => c.tier }
}

output "dns" {
  description = "The manifest's DNS zones and, per zone, the NS names to delegate to from the parent zone (ns-<cluster>.<zone>) with their glue address from dns_advertise (null when not given)."
  value = {
    zones      = local.zones
    delegation = local.dns_delegation
  }
}
