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
