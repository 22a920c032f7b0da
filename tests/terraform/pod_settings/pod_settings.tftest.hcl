# terraform test of the fedgate-cluster module's pod_settings.tf, without providers:
# tests/terraform/test_pod_settings.py copies it beside that file, the module's
# variables.tf and outputs.tf of this folder.

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
    admin: {tokenFile: /run/secrets/fedgate/admin-token}
  EOT
  image           = "registry.acme.net/fedgate:1.0"
  admin_token     = "0123456789abcdef0123"
  kubernetes_host = "https://k8s.acme.net:6443"
}

run "plain_admin_plain_etcd" {
  command = apply

  assert {
    condition     = output.admin_scheme == "HTTP" && output.port.admin == 9901
    error_message = "without admin.tls the probes are plain HTTP"
  }

  assert {
    condition     = output.etcd.ca == null && output.etcd.client_dir == null && output.etcd.user == "fedgate-gateway-aws-eu-west-1"
    error_message = "no etcd TLS volume without etcd.tls"
  }
}

run "admin_tls_probes_over_https" {
  command = apply

  variables {
    settings_yaml = <<-EOT
      cluster: aws-eu-west-1
      listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9443"}
      admin: {tokenFile: /run/secrets/fedgate/admin-token, tls: true}
    EOT
  }

  assert {
    condition     = output.admin_scheme == "HTTPS" && output.port.admin == 9443
    error_message = "with admin.tls the kubelet probes (and Prometheus) use HTTPS"
  }
}

run "etcd_client_certificate_from_a_secret" {
  command = apply

  variables {
    settings_yaml      = <<-EOT
      cluster: aws-eu-west-1
      listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901"}
      etcd:
        endpoints: ["https://etcd-0:2379"]
        tls: {ca: /etc/fedgate/etcd-ca/ca.crt, cert: /etc/fedgate/etcd/tls.crt, key: /etc/fedgate/etcd/tls.key}
    EOT
    etcd_client_secret = "fedgate-etcd-client"
  }

  assert {
    condition     = output.etcd.ca_dir == "/etc/fedgate/etcd-ca" && output.etcd.client_dir == "/etc/fedgate/etcd" && output.etcd.vault_role == null
    error_message = "the CA and the client certificate are two volumes"
  }

  assert {
    condition     = contains(output.mount_dirs, "/etc/fedgate/etcd-ca") && contains(output.mount_dirs, "/etc/fedgate/etcd")
    error_message = "etcd's folders are mounted"
  }
}

run "etcd_client_certificate_from_vault_needs_the_ca_pem" {
  command = apply

  variables {
    settings_yaml    = <<-EOT
      cluster: aws-eu-west-1
      listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901"}
      etcd:
        endpoints: ["https://etcd-0:2379"]
        tls: {ca: /etc/fedgate/etcd-ca/ca.crt, cert: /var/run/fedgate/etcd/tls.crt, key: /var/run/fedgate/etcd/tls.key, vaultRole: fedgate-etcd-aws-eu-west-1}
    EOT
    etcd_ca_cert_pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
  }

  assert {
    condition     = output.etcd.vault_role == "fedgate-etcd-aws-eu-west-1" && output.etcd.client_dir == "/var/run/fedgate/etcd"
    error_message = "vaultRole read from the settings"
  }
}

run "etcd_tls_without_a_client_secret_is_refused" {
  command = plan

  variables {
    settings_yaml = <<-EOT
      cluster: aws-eu-west-1
      listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901"}
      etcd:
        endpoints: ["https://etcd-0:2379"]
        tls: {ca: /etc/fedgate/etcd-ca/ca.crt, cert: /etc/fedgate/etcd/tls.crt, key: /etc/fedgate/etcd/tls.key}
    EOT
  }

  expect_failures = [terraform_data.pod_settings]
}

run "etcd_vault_role_without_the_ca_pem_is_refused" {
  command = plan

  variables {
    settings_yaml      = <<-EOT
      cluster: aws-eu-west-1
      listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901"}
      etcd:
        endpoints: ["https://etcd-0:2379"]
        tls: {ca: /etc/fedgate/etcd-ca/ca.crt, cert: /etc/fedgate/etcd/tls.crt, key: /etc/fedgate/etcd/tls.key, vaultRole: r}
    EOT
    etcd_client_secret = "unused-with-vault"
  }

  expect_failures = [terraform_data.pod_settings]
}

run "etcd_files_in_the_settings_folder_are_refused" {
  command = plan

  variables {
    settings_yaml      = <<-EOT
      cluster: aws-eu-west-1
      listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901"}
      etcd:
        endpoints: ["https://etcd-0:2379"]
        tls: {ca: /etc/fedgate/ca.crt, cert: /etc/fedgate/etcd/tls.crt, key: /etc/fedgate/etcd/tls.key}
    EOT
    etcd_client_secret = "fedgate-etcd-client"
  }

  expect_failures = [terraform_data.pod_settings]
}

run "etcd_cert_and_key_in_two_folders_are_refused" {
  command = plan

  variables {
    settings_yaml      = <<-EOT
      cluster: aws-eu-west-1
      listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901"}
      etcd:
        endpoints: ["https://etcd-0:2379"]
        tls: {ca: /etc/fedgate/etcd-ca/ca.crt, cert: /etc/fedgate/etcd/tls.crt, key: /etc/fedgate/keys/tls.key}
    EOT
    etcd_client_secret = "fedgate-etcd-client"
  }

  expect_failures = [terraform_data.pod_settings]
}

run "dns_listener_port" {
  command = apply

  variables {
    settings_yaml = <<-EOT
      cluster: aws-eu-west-1
      listen: {public: "0.0.0.0:8080", eastWest: "0.0.0.0:15443", admin: "0.0.0.0:9901", dns: "0.0.0.0:53"}
    EOT
  }

  assert {
    condition     = output.port.dns == 53
    error_message = "listen.dns gives the DNS port (container ports, NetworkPolicy, Service)"
  }
}
