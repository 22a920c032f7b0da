# terraform test with mocked providers (Terraform >= 1.7): what the module plans for one
# cluster, offline. Run from this module's directory: terraform init && terraform test
# (init needs the hashicorp/kubernetes and hashicorp/vault providers' schemas: the
# registry, a mirror, or the schema-only providers of tests/support/tfprovider, which
# tests/terraform/test_cluster_module.py installs as a filesystem mirror).

mock_provider "kubernetes" {}
mock_provider "vault" {}

variables {
  cluster = {
    name       = "aws-eu-west-1"
    namespaces = ["shop"]
    vault = {
      auth_mount   = "kubernetes-aws-eu-west-1"
      auth_role    = "fedgate"
      pki_mount    = "pki"
      pki_role     = "fedgate-aws-eu-west-1"
      trust_domain = "acme.net"
      spiffe_id    = "spiffe://acme.net/cluster/aws-eu-west-1/gateway"
      common_name  = "aws-eu-west-1.gateway.acme.net"
      server_names = ["shop.acme.com"]
    }
  }
  settings_yaml   = <<-EOT
    cluster: aws-eu-west-1
    listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901"}
    etcd: {endpoints: ["http://etcd:2379"]}
    vault: {addr: "https://vault.acme.net:8200"}
    admin: {tokenFile: /run/secrets/fedgate/admin-token}
  EOT
  image           = "registry.acme.net/fedgate:1.0"
  admin_token     = "0123456789abcdef0123"
  kubernetes_host = "https://k8s.acme.net:6443"
}

run "defaults" {
  command = plan

  assert {
    condition     = kubernetes_deployment_v1.gateway.spec[0].template[0].metadata[0].annotations["prometheus.io/scrape"] == "true" && kubernetes_deployment_v1.gateway.spec[0].template[0].metadata[0].annotations["prometheus.io/port"] == "9901" && kubernetes_deployment_v1.gateway.spec[0].template[0].metadata[0].annotations["prometheus.io/path"] == "/metrics"
    error_message = "the pods are annotated for Prometheus on the admin port"
  }

  assert {
    condition     = length(kubernetes_secret_v1.vault_ca) == 0 && length(kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].image_pull_secrets) == 0
    error_message = "no Vault CA and no pull secret unless asked"
  }

  assert {
    condition     = kubernetes_service_v1.public.spec[0].type == "LoadBalancer" && kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].image_pull_policy == "IfNotPresent"
    error_message = "defaults"
  }

  assert {
    condition     = length(kubernetes_service_v1.dns) == 0 && length(kubernetes_secret_v1.etcd_ca) == 0 && length(vault_pki_secret_backend_role.etcd_client) == 0 && kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].readiness_probe[0].http_get[0].scheme == "HTTP"
    error_message = "no DNS Service, no etcd TLS material, plain HTTP probes unless the settings ask"
  }
}

run "vault_ca_mounted_and_a_private_registry" {
  command = plan

  variables {
    settings_yaml      = <<-EOT
      cluster: aws-eu-west-1
      listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901"}
      vault: {addr: "https://vault.acme.net:8200", caCert: /etc/fedgate/vault/ca.pem}
    EOT
    vault_ca_cert_pem  = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    image_pull_secrets = ["regcred"]
    prometheus_scrape  = false
  }

  assert {
    condition     = length(kubernetes_secret_v1.vault_ca) == 1
    error_message = "the CA is stored in a Secret"
  }

  assert {
    condition     = contains([for m in kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].volume_mount : m.mount_path if m.name == "vault-ca"], "/etc/fedgate/vault")
    error_message = "the CA is mounted in the directory of vault.caCert"
  }

  assert {
    condition     = kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].image_pull_secrets[0].name == "regcred"
    error_message = "imagePullSecrets"
  }

  assert {
    condition     = !contains(keys(kubernetes_deployment_v1.gateway.spec[0].template[0].metadata[0].annotations), "prometheus.io/scrape")
    error_message = "prometheus_scrape = false leaves the annotations out"
  }
}

run "a_vault_ca_path_without_its_pem_is_refused" {
  command = plan

  variables {
    settings_yaml = <<-EOT
      cluster: aws-eu-west-1
      listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901"}
      vault: {addr: "https://vault.acme.net:8200", caCert: /etc/fedgate/vault/ca.pem}
    EOT
  }

  # the Secret's precondition fails first; the Deployment, which mounts that Secret, is
  # then never planned (its own precondition guards a configuration without the Secret)
  expect_failures = [kubernetes_secret_v1.vault_ca]
}

run "bad_values_are_refused" {
  command = plan

  variables {
    public_service_type    = "Ingress"
    east_west_service_type = "ClusterIP"
    image_pull_policy      = "Sometimes"
    replicas               = 0
  }

  expect_failures = [var.public_service_type, var.east_west_service_type, var.image_pull_policy, var.replicas]
}

run "network_policy_rbac_and_scaling" {
  command = plan

  variables {
    admin_allowed_cidrs = ["10.20.0.0/16"]
    metrics_scraper = {
      namespace_labels = { "kubernetes.io/metadata.name" = "monitoring" }
      pod_labels       = { "app.kubernetes.io/name" = "prometheus" }
    }
    min_replicas = 3
    max_replicas = 6
  }

  assert {
    condition     = contains([for p in kubernetes_network_policy_v1.gateway[0].spec[0].ingress[0].ports : p.port], "8080") && contains([for p in kubernetes_network_policy_v1.gateway[0].spec[0].ingress[0].ports : p.port], "15443")
    error_message = "the public and east-west ports are open to all"
  }

  assert {
    condition     = kubernetes_network_policy_v1.gateway[0].spec[0].ingress[1].ports[0].port == "9901" && kubernetes_network_policy_v1.gateway[0].spec[0].ingress[1].from[0].ip_block[0].cidr == "10.20.0.0/16" && kubernetes_network_policy_v1.gateway[0].spec[0].ingress[1].from[1].namespace_selector[0].match_labels["kubernetes.io/metadata.name"] == "monitoring"
    error_message = "the admin port admits the operators' CIDRs and the scraper only"
  }

  assert {
    condition     = length(kubernetes_role_binding_v1.discovery) == 1 && kubernetes_role_binding_v1.discovery["shop"].metadata[0].namespace == "shop"
    error_message = "one RoleBinding per namespace of the cluster"
  }

  assert {
    condition     = kubernetes_horizontal_pod_autoscaler_v2.gateway.spec[0].min_replicas == 3 && kubernetes_horizontal_pod_autoscaler_v2.gateway.spec[0].max_replicas == 6 && kubernetes_pod_disruption_budget_v1.gateway.spec[0].max_unavailable == "1"
    error_message = "scaling bounds and the disruption budget"
  }
}

run "no_admin_rule_when_nobody_is_named" {
  command = plan

  assert {
    condition     = length(kubernetes_network_policy_v1.gateway[0].spec[0].ingress) == 1
    error_message = "without admin_allowed_cidrs nor metrics_scraper the admin port is closed to the network"
  }
}

# ----------------------------------------------------------------------------------------
# The settings below are not written by hand: each comes from the fedgate-settings module
# run on a fixture that `fedgate render` made (../fedgate-settings/tests/fixtures, kept
# current by tests/terraform), the way an operator composes the two modules. A run with a
# module block renders them; the next run feeds them to this module.

run "settings_with_admin_tls_and_etcd_tls_from_a_secret" {
  command = apply

  module {
    source = "../fedgate-settings"
  }

  variables {
    manifest_json_path = "../fedgate-settings/tests/fixtures/clusters.example.json"
    clusters           = ["aws-eu-west-1"]
    etcd_endpoints     = ["https://etcd-0.fedgate.acme.net:2379"]
    etcd_tls           = {}
    admin_tls          = true
    vault = {
      addr         = "https://vault.acme.net:8200"
      trust_domain = "acme.net"
    }
  }
}

run "admin_tls_probes_https_and_etcd_tls_from_a_secret" {
  command = plan

  variables {
    cluster            = run.settings_with_admin_tls_and_etcd_tls_from_a_secret.clusters["aws-eu-west-1"]
    settings_yaml      = run.settings_with_admin_tls_and_etcd_tls_from_a_secret.settings["aws-eu-west-1"]
    etcd_client_secret = "fedgate-etcd-client"
    etcd_ca_cert_pem   = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
  }

  assert {
    condition     = kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].readiness_probe[0].http_get[0].scheme == "HTTPS" && kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].startup_probe[0].http_get[0].scheme == "HTTPS" && kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].liveness_probe[0].http_get[0].scheme == "HTTPS"
    error_message = "with admin.tls the kubelet probes the admin listener over HTTPS"
  }

  assert {
    condition     = kubernetes_deployment_v1.gateway.spec[0].template[0].metadata[0].annotations["prometheus.io/scheme"] == "https" && terraform_data.pod_settings.input.admin_scheme == "HTTPS"
    error_message = "Prometheus scrapes the TLS admin listener over https"
  }

  assert {
    condition     = length(kubernetes_secret_v1.etcd_ca) == 1 && kubernetes_secret_v1.etcd_ca[0].data["ca.crt"] == "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
    error_message = "etcd's CA is stored in a Secret under the basename of etcd.tls.ca"
  }

  assert {
    condition     = contains([for m in kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].volume_mount : m.mount_path if m.name == "etcd-ca"], "/etc/fedgate-etcd/ca") && [for m in kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].volume_mount : [m.mount_path, m.read_only] if m.name == "etcd-client"] == [["/etc/fedgate-etcd/client", true]]
    error_message = "etcd's CA and the client certificate are mounted, read-only, in the folders of etcd.tls.ca and etcd.tls.cert"
  }

  assert {
    condition     = one([for v in kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].volume : v.secret[0].secret_name if v.name == "etcd-client"]) == "fedgate-etcd-client" && toset(one([for v in kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].volume : v.secret[0].items if v.name == "etcd-client"])[*].path) == toset(["tls.crt", "tls.key"])
    error_message = "the client certificate and key come from etcd_client_secret"
  }

  assert {
    condition     = length(vault_pki_secret_backend_role.etcd_client) == 0 && !strcontains(vault_policy.gateway.policy, "etcd")
    error_message = "without vaultRole no PKI role for etcd, and the gateway's policy cannot issue one"
  }
}

run "etcd_tls_without_a_client_certificate_is_refused" {
  command = plan

  variables {
    cluster          = run.settings_with_admin_tls_and_etcd_tls_from_a_secret.clusters["aws-eu-west-1"]
    settings_yaml    = run.settings_with_admin_tls_and_etcd_tls_from_a_secret.settings["aws-eu-west-1"]
    etcd_ca_cert_pem = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
  }

  # etcd.tls names a client certificate the pod could not mount: no etcd_client_secret,
  # and no etcd.tls.vaultRole for the gateway to issue it itself
  expect_failures = [terraform_data.pod_settings]
}

run "settings_with_an_etcd_client_certificate_from_vault" {
  command = apply

  module {
    source = "../fedgate-settings"
  }

  variables {
    manifest_json_path = "../fedgate-settings/tests/fixtures/clusters.example.json"
    clusters           = ["aws-eu-west-1"]
    etcd_endpoints     = ["https://etcd-0.fedgate.acme.net:2379"]
    etcd_tls           = { vault_role_format = "fedgate-etcd-%s" }
    vault = {
      addr         = "https://vault.acme.net:8200"
      trust_domain = "acme.net"
    }
  }
}

run "etcd_client_certificate_issued_by_vault" {
  command = plan

  variables {
    cluster          = run.settings_with_an_etcd_client_certificate_from_vault.clusters["aws-eu-west-1"]
    settings_yaml    = run.settings_with_an_etcd_client_certificate_from_vault.settings["aws-eu-west-1"]
    etcd_ca_cert_pem = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
  }

  assert {
    condition     = length(vault_pki_secret_backend_role.etcd_client) == 1 && vault_pki_secret_backend_role.etcd_client[0].name == "fedgate-etcd-aws-eu-west-1" && vault_pki_secret_backend_role.etcd_client[0].allowed_domains == tolist(["fedgate-gateway-aws-eu-west-1"])
    error_message = "with vaultRole the module makes that PKI role, which issues the cluster's etcd user only"
  }

  assert {
    condition     = vault_pki_secret_backend_role.etcd_client[0].client_flag && !vault_pki_secret_backend_role.etcd_client[0].server_flag && strcontains(vault_policy.gateway.policy, "pki/issue/fedgate-etcd-aws-eu-west-1")
    error_message = "client certificates only, and the gateway's policy may issue from that role"
  }

  assert {
    condition     = one([for v in kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].volume : v.empty_dir[0].medium if v.name == "etcd-client"]) == "Memory" && [for m in kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].volume_mount : [m.mount_path, m.read_only] if m.name == "etcd-client"] == [["/etc/fedgate-etcd/client", false]]
    error_message = "the gateway writes the certificate it issues into a writable in-memory folder"
  }

  assert {
    condition     = length(kubernetes_secret_v1.etcd_ca) == 1 && kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].readiness_probe[0].http_get[0].scheme == "HTTP"
    error_message = "etcd's CA from etcd_ca_cert_pem; without admin.tls the probes stay HTTP"
  }
}

run "settings_with_a_dns_listener" {
  command = apply

  module {
    source = "../fedgate-settings"
  }

  variables {
    manifest_json_path = "../fedgate-settings/tests/fixtures/dns.json"
    etcd_endpoints     = ["http://etcd-0.fedgate.acme.net:2379"]
    listen             = { dns = "0.0.0.0:53" }
    dns_advertise      = { "aws-1" = "203.0.113.53:53" }
    vault = {
      addr         = "https://vault.acme.net:8200"
      trust_domain = "acme.net"
    }
  }
}

run "dns_service_with_listen_dns" {
  command = plan

  variables {
    cluster          = run.settings_with_a_dns_listener.clusters["aws-1"]
    settings_yaml    = run.settings_with_a_dns_listener.settings["aws-1"]
    dns_service_type = "NodePort"
  }

  assert {
    condition     = length(kubernetes_service_v1.dns) == 1 && kubernetes_service_v1.dns[0].spec[0].type == "NodePort" && toset([for p in kubernetes_service_v1.dns[0].spec[0].port : "${p.protocol}/${p.port}->${p.target_port}"]) == toset(["UDP/53->dns", "TCP/53->dns-tcp"])
    error_message = "listen.dns makes a DNS Service on 53, UDP and TCP"
  }

  assert {
    condition     = toset([for p in kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].container[0].port : "${p.name}/${p.protocol}/${p.container_port}" if startswith(p.name, "dns")]) == toset(["dns/UDP/53", "dns-tcp/TCP/53"])
    error_message = "the container declares the DNS ports the Service targets"
  }

  assert {
    condition     = one(kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].security_context[0].sysctl).name == "net.ipv4.ip_unprivileged_port_start" && one(kubernetes_deployment_v1.gateway.spec[0].template[0].spec[0].security_context[0].sysctl).value == "53"
    error_message = "port 53 without root: the pod lets unprivileged processes bind from 53"
  }
}
