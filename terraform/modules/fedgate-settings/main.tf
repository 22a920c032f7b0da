# Reads the federation manifest as fedgate itself parsed and validated it
# (`fedgate render clusters.yaml > federation.json`: every default filled in, camelCase)
# and renders, for every cluster, the gateway settings (gateway.yaml, as
# federation/settings.py GatewaySettings reads them) and the facts a deployment needs:
# tier, peers' east-west addresses, namespaces, Vault names. No rule of the manifest is
# re-implemented here: a manifest that fedgate refuses never reaches Terraform.

locals {
  manifest = jsondecode(file(var.manifest_json_path))

  all_clusters = {
    for c in local.manifest.clusters : c.name => {
      name        = c.name
      region      = c.region
      cloud       = c.cloud
      environment = c.environment
      tier        = c.tier
      east_west   = c.eastWest
      namespaces  = c.kubernetes == null ? [] : c.kubernetes.namespaces
      context     = c.kubernetes == null ? null : c.kubernetes.context
      labels      = c.labels
    }
  }

  selected = var.clusters == null ? keys(local.all_clusters) : var.clusters

  clusters = { for name in local.selected : name => local.all_clusters[name] }

  services = local.manifest.services

  # the host part of an east-west URL (https://host:port)
  east_west_host = {
    for name, c in local.all_clusters : name => (
      c.east_west == "" ? "" : regex("^[a-zA-Z][a-zA-Z0-9+.-]*://(\\[[^]]+\\]|[^:/]+)", c.east_west)[0]
    )
  }

  # public names per cluster: the route hosts of the services that run there
  route_hosts = {
    for name in local.selected : name => distinct(flatten([
      for s in local.services : [for r in s.routes : r.host] if contains(s.clusters, name)
    ]))
  }

  peers = {
    for name in local.selected : name => {
      for other, c in local.all_clusters : other => c.east_west if other != name && c.east_west != ""
    }
  }

  vault_names = {
    for name in local.selected : name => {
      auth_mount   = format(var.vault.auth_mount_format, name)
      auth_role    = var.vault.auth_role
      pki_mount    = var.vault.pki_mount
      pki_role     = format(var.vault.pki_role_format, name)
      trust_domain = var.vault.trust_domain
      spiffe_id    = "spiffe://${var.vault.trust_domain}/cluster/${name}/gateway"
      common_name  = "${name}.gateway.${var.vault.trust_domain}"
      server_names = distinct(compact(concat(
        local.route_hosts[name],
        lookup(var.server_names, name, []),
        [local.east_west_host[name]],
      )))
    }
  }

  # etcd's user (and role, and client certificate CN) for a cluster's gateways, as
  # `fedgate etcd-bootstrap` creates it (federation/keys.py role_name)
  etcd_user = { for name in local.selected : name => "fedgate-gateway-${name}" }

  etcd_tls = {
    for name in local.selected : name => var.etcd_tls == null ? null : merge(
      { ca = var.etcd_tls.ca, cert = var.etcd_tls.cert, key = var.etcd_tls.key },
      var.etcd_tls.vault_role_format == null ? {} : { vaultRole = format(var.etcd_tls.vault_role_format, name) },
    )
  }

  # TLS and plain endpoints are not mixed: a client certificate is useless over http://,
  # and https:// without one is refused by an etcd with --client-cert-auth
  etcd_https = [for e in var.etcd_endpoints : startswith(lower(e), "https://")]

  settings = {
    for name in local.selected : name => merge(
      {
        cluster = name
        listen = merge(
          {
            public   = var.listen.public
            eastWest = var.listen.east_west
            admin    = var.listen.admin
          },
          try(length(var.listen.public_tls), 0) == 0 ? {} : { publicTls = var.listen.public_tls },
          var.listen.dns == "" ? {} : { dns = var.listen.dns },
        )
        etcd = merge(
          {
            endpoints = var.etcd_endpoints
            prefix    = var.etcd_prefix
          },
          local.etcd_tls[name] == null ? {} : { tls = local.etcd_tls[name] },
        )
        vault = merge(
          {
            addr = var.vault.addr
            auth = {
              method = "kubernetes"
              role   = var.vault.auth_role
              mount  = local.vault_names[name].auth_mount
            }
            pki = {
              mount       = var.vault.pki_mount
              role        = local.vault_names[name].pki_role
              trustDomain = var.vault.trust_domain
              serverNames = local.vault_names[name].server_names
              ttl         = var.vault.ttl
            }
          },
          var.vault.ca_cert == null ? {} : { caCert = var.vault.ca_cert },
        )
        admin = merge(
          { tokenFile = var.admin_token_file },
          var.admin_tls ? { tls = true } : {},
        )
        snapshot = var.snapshot_path
      },
      lookup(var.dns_advertise, name, "") == "" ? {} : { dns = { advertise = var.dns_advertise[name] } },
    )
  }

  # the federation's DNS zones and, per zone, the NS names a parent zone delegates to
  # (one per cluster: ns-<cluster>.<zone>) with their glue (docs/dns.md)
  zones = [for z in local.manifest.zones : lower(z.name)]
  dns_delegation = {
    for z in local.zones : z => {
      for name in keys(local.all_clusters) : "ns-${name}.${z}" => (
        lookup(var.dns_advertise, name, "") == "" ? null : regex("^\\[?([^]]*?)\\]?:[0-9]+$", var.dns_advertise[name])[0]
      )
    }
  }
}
