# terraform test: the settings rendered for every cluster of clusters.example.yaml.
# Run from this module's directory (the paths below are relative to it). The fixtures
# are `fedgate render` of the YAML beside them (tests/terraform checks they are current).

variables {
  manifest_json_path = "tests/fixtures/clusters.example.json"
  etcd_endpoints     = ["http://etcd-0.fedgate.acme.net:2379", "http://etcd-1.fedgate.acme.net:2379"]
  vault = {
    addr         = "https://vault.acme.net:8200"
    trust_domain = "acme.net"
  }
}

run "every_cluster_of_the_example" {
  command = apply

  assert {
    condition     = output.federation == "acme-prod"
    error_message = "federation name not read from metadata.name"
  }

  assert {
    condition     = toset(keys(output.settings)) == toset(["aws-eu-west-1", "aws-us-east-1", "gcp-europe-west4", "azure-westeurope", "onprem-fra1"])
    error_message = "one gateway.yaml per cluster of the manifest expected"
  }

  assert {
    condition     = alltrue([for name, text in output.settings : yamldecode(text).cluster == name])
    error_message = "each gateway.yaml must name its own cluster"
  }

  assert {
    condition     = alltrue([for name, text in output.settings : jsonencode(yamldecode(text).etcd.endpoints) == jsonencode(var.etcd_endpoints) && yamldecode(text).etcd.prefix == "/fedgate/"])
    error_message = "etcd settings not rendered"
  }

  assert {
    condition = alltrue([for name, text in output.settings : yamldecode(text).listen == {
      public    = "0.0.0.0:8080"
      publicTls = "0.0.0.0:8443"
      eastWest  = "0.0.0.0:15443"
      admin     = "0.0.0.0:9901"
    }])
    error_message = "listen addresses not rendered"
  }

  assert {
    condition = alltrue([for name, text in output.settings : yamldecode(text).vault.auth == {
      method = "kubernetes"
      role   = "fedgate"
      mount  = "kubernetes-${name}"
    }])
    error_message = "each cluster logs in to Vault through its own kubernetes auth mount"
  }

  assert {
    condition     = alltrue([for name, text in output.settings : yamldecode(text).vault.pki.role == "fedgate-${name}" && yamldecode(text).vault.pki.mount == "pki" && yamldecode(text).vault.pki.trustDomain == "acme.net"])
    error_message = "PKI settings not rendered"
  }

  assert {
    condition     = alltrue([for name, text in output.settings : yamldecode(text).admin.tokenFile == "/run/secrets/fedgate/admin-token" && yamldecode(text).snapshot == "/var/lib/fedgate/view.json"])
    error_message = "admin token file and snapshot path not rendered"
  }

  assert {
    condition     = output.tiers == { "aws-eu-west-1" = 0, "aws-us-east-1" = 0, "gcp-europe-west4" = 0, "azure-westeurope" = 0, "onprem-fra1" = 1 }
    error_message = "tiers wrong"
  }

  assert {
    condition     = alltrue([for name, peers in output.peers : length(peers) == 4 && !contains(keys(peers), name)])
    error_message = "every cluster has the four others as peers, never itself"
  }

  assert {
    condition     = output.peers["onprem-fra1"]["aws-eu-west-1"] == "https://gw.eu-west-1.aws.acme.net:15443" && output.peers["aws-eu-west-1"]["onprem-fra1"] == "https://gw.fra1.onprem.acme.net:15443"
    error_message = "peers' east-west addresses wrong"
  }

  assert {
    condition     = output.clusters["aws-eu-west-1"].namespaces == tolist(["shop", "payments"]) && length(output.clusters["onprem-fra1"].namespaces) == 0 && output.clusters["aws-us-east-1"].context == "aws-us-east-1"
    error_message = "kubernetes discovery settings wrong"
  }

  assert {
    condition     = output.clusters["gcp-europe-west4"].cloud == "gcp" && output.clusters["azure-westeurope"].cloud == "azure" && output.clusters["onprem-fra1"].cloud == "onprem"
    error_message = "clouds wrong"
  }

  # public names: the route hosts of the services that run in the cluster, plus its east-west host
  assert {
    condition     = toset(yamldecode(output.settings["aws-eu-west-1"]).vault.pki.serverNames) == toset(["shop.acme.com", "*.shop.acme.com", "api.acme.com", "payments.acme.com", "gw.eu-west-1.aws.acme.net"])
    error_message = "aws-eu-west-1 server names wrong"
  }

  assert {
    condition     = toset(yamldecode(output.settings["aws-us-east-1"]).vault.pki.serverNames) == toset(["shop.acme.com", "*.shop.acme.com", "gw.us-east-1.aws.acme.net"])
    error_message = "aws-us-east-1 runs only the storefront"
  }

  assert {
    condition     = output.clusters["onprem-fra1"].vault.spiffe_id == "spiffe://acme.net/cluster/onprem-fra1/gateway" && output.clusters["onprem-fra1"].vault.common_name == "onprem-fra1.gateway.acme.net"
    error_message = "SPIFFE identity wrong"
  }
}

run "a_subset_with_overrides" {
  command = apply

  variables {
    clusters     = ["aws-eu-west-1", "onprem-fra1"]
    etcd_prefix  = "/acme/"
    server_names = { "onprem-fra1" = ["shop.fra1.acme.internal"] }
    listen       = { public_tls = "", admin = "0.0.0.0:9000" }
    vault = {
      addr              = "https://vault.acme.net:8200"
      auth_role         = "gateway"
      auth_mount_format = "k8s/%s"
      pki_mount         = "pki_int"
      pki_role_format   = "gw-%s"
      ca_cert           = "/etc/fedgate/vault-ca.pem"
    }
  }

  assert {
    condition     = toset(keys(output.settings)) == toset(["aws-eu-west-1", "onprem-fra1"])
    error_message = "only the chosen clusters are rendered"
  }

  assert {
    condition     = length(output.peers["onprem-fra1"]) == 4
    error_message = "peers still come from the whole manifest"
  }

  assert {
    condition     = yamldecode(output.settings["onprem-fra1"]).etcd.prefix == "/acme/" && !can(yamldecode(output.settings["onprem-fra1"]).listen.publicTls) && yamldecode(output.settings["onprem-fra1"]).listen.admin == "0.0.0.0:9000"
    error_message = "overrides not applied"
  }

  assert {
    condition     = yamldecode(output.settings["onprem-fra1"]).vault.auth.mount == "k8s/onprem-fra1" && yamldecode(output.settings["onprem-fra1"]).vault.pki.role == "gw-onprem-fra1" && yamldecode(output.settings["onprem-fra1"]).vault.pki.mount == "pki_int" && yamldecode(output.settings["onprem-fra1"]).vault.caCert == "/etc/fedgate/vault-ca.pem"
    error_message = "vault names not rendered from the formats"
  }

  assert {
    condition     = contains(yamldecode(output.settings["onprem-fra1"]).vault.pki.serverNames, "shop.fra1.acme.internal")
    error_message = "extra server names not added"
  }
}

run "defaults_of_a_minimal_manifest" {
  command = apply

  variables {
    manifest_json_path = "tests/fixtures/minimal.json"
  }

  assert {
    condition     = output.tiers == { "lab-a" = 0, "lab-b" = 2 }
    error_message = "tier defaults to 0"
  }

  assert {
    condition     = output.peers == { "lab-a" = { "lab-b" = "https://lab-b.example.net:15443" }, "lab-b" = { "lab-a" = "https://10.1.2.3:15443" } }
    error_message = "each cluster has the other as its peer"
  }

  assert {
    condition     = yamldecode(output.settings["lab-a"]).vault.pki.serverNames == ["10.1.2.3"] && yamldecode(output.settings["lab-b"]).vault.pki.serverNames == ["lab-b.example.net"]
    error_message = "server names of a manifest without services"
  }

  assert {
    condition     = output.clusters["lab-a"].environment == "prod" && length(output.clusters["lab-a"].namespaces) == 0 && output.clusters["lab-a"].context == null
    error_message = "the defaults fedgate filled in are used as they are"
  }
}

run "refuses_a_file_that_is_not_a_federation" {
  command = plan

  variables {
    manifest_json_path = "tests/fixtures/not-a-federation.json"
  }

  expect_failures = [var.manifest_json_path]
}

run "dns_listener_zones_and_delegation" {
  command = apply

  variables {
    manifest_json_path = "tests/fixtures/dns.json"
    listen             = { dns = "0.0.0.0:53" }
    dns_advertise      = { "aws-1" = "203.0.113.53:53" }
  }

  assert {
    condition     = alltrue([for name, text in output.settings : yamldecode(text).listen.dns == "0.0.0.0:53"])
    error_message = "listen.dns not rendered"
  }

  assert {
    condition     = yamldecode(output.settings["aws-1"]).dns.advertise == "203.0.113.53:53" && !can(yamldecode(output.settings["gcp-1"]).dns)
    error_message = "dns.advertise rendered only where dns_advertise names the cluster"
  }

  assert {
    condition = output.dns == {
      zones = ["gslb.acme.com"]
      delegation = {
        "gslb.acme.com" = {
          "ns-aws-1.gslb.acme.com" = "203.0.113.53"
          "ns-gcp-1.gslb.acme.com" = null
        }
      }
    }
    error_message = "zones and NS delegation not rendered"
  }
}

run "etcd_over_mutual_tls_with_a_client_certificate_from_a_secret" {
  command = apply

  variables {
    etcd_endpoints = ["https://etcd-0.fedgate.acme.net:2379", "https://etcd-1.fedgate.acme.net:2379"]
    etcd_tls       = {}
    admin_tls      = true
  }

  assert {
    condition = alltrue([for name, text in output.settings : yamldecode(text).etcd.tls == {
      ca   = "/etc/fedgate-etcd/ca/ca.crt"
      cert = "/etc/fedgate-etcd/client/tls.crt"
      key  = "/etc/fedgate-etcd/client/tls.key"
    }])
    error_message = "etcd.tls not rendered (CA, client certificate and key, no vaultRole)"
  }

  assert {
    condition     = alltrue([for name, c in output.clusters : c.etcd_user == "fedgate-gateway-${name}"])
    error_message = "each cluster's etcd user is the gateway role fedgate etcd-bootstrap creates"
  }

  assert {
    condition     = alltrue([for name, text in output.settings : yamldecode(text).admin == { tokenFile = "/run/secrets/fedgate/admin-token", tls = true }])
    error_message = "admin.tls not rendered"
  }
}

run "etcd_client_certificate_issued_by_vault" {
  command = apply

  variables {
    etcd_endpoints = ["https://etcd-0.fedgate.acme.net:2379"]
    etcd_tls = {
      ca                = "/etc/fedgate/etcd-ca/ca.pem"
      cert              = "/var/run/fedgate/etcd/client.pem"
      key               = "/var/run/fedgate/etcd/client-key.pem"
      vault_role_format = "fedgate-etcd-%s"
    }
  }

  assert {
    condition     = alltrue([for name, text in output.settings : yamldecode(text).etcd.tls.vaultRole == "fedgate-etcd-${name}" && yamldecode(text).etcd.tls.cert == "/var/run/fedgate/etcd/client.pem" && yamldecode(text).etcd.tls.ca == "/etc/fedgate/etcd-ca/ca.pem"])
    error_message = "etcd.tls.vaultRole not rendered from vault_role_format"
  }

  assert {
    condition     = alltrue([for name, text in output.settings : !can(yamldecode(text).admin.tls)])
    error_message = "admin.tls is off unless asked"
  }
}

run "etcd_tls_over_plain_http_is_refused" {
  command = plan

  variables {
    etcd_tls = {}
  }

  expect_failures = [output.settings]
}

run "https_endpoints_without_etcd_tls_are_refused" {
  command = plan

  variables {
    etcd_endpoints = ["https://etcd-0.fedgate.acme.net:2379", "http://etcd-1.fedgate.acme.net:2379"]
  }

  expect_failures = [output.settings]
}

run "etcd_tls_files_that_cannot_be_mounted_are_refused" {
  command = plan

  variables {
    etcd_endpoints = ["https://etcd-0.fedgate.acme.net:2379"]
    etcd_tls = {
      ca   = "/etc/fedgate/etcd/ca.crt"
      cert = "/etc/fedgate/etcd/tls.crt"
      key  = "relative/tls.key"
    }
  }

  expect_failures = [var.etcd_tls]
}
