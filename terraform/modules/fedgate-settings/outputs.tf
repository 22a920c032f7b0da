output "federation" {
  description = "The federation's name (metadata.name of the manifest)."
  value       = local.manifest.name
}

output "settings" {
  description = "Per cluster: the rendered gateway.yaml (YAML text)."
  value       = { for name, s in local.settings : name => yamlencode(s) }
}

output "settings_objects" {
  description = "Per cluster: the same settings as an object (for assertions and composition)."
  value       = local.settings
}

output "clusters" {
  description = "Per cluster: name, region, cloud, environment, tier, east_west URL, namespaces, kubeconfig context, labels, peers (name -> east-west URL) and Vault names."
  value = {
    for name, c in local.clusters : name => merge(c, {
      peers = local.peers[name]
      vault = local.vault_names[name]
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
