# This cluster's side of Vault: a Kubernetes auth mount that trusts this cluster's
# service-account tokens (checked with TokenReview), a role bound to the gateway's
# service account, a policy that may only issue from this cluster's PKI role, and that
# PKI role: the public server names, the east-west common name and the cluster's SPIFFE ID.
# The PKI mount itself (and its CA) is shared by the federation: see docs/deploy.md.

resource "vault_auth_backend" "kubernetes" {
  type        = "kubernetes"
  path        = var.cluster.vault.auth_mount
  description = "fedgate gateways of cluster ${var.cluster.name}"
}

resource "vault_kubernetes_auth_backend_config" "this" {
  backend            = vault_auth_backend.kubernetes.path
  kubernetes_host    = var.kubernetes_host
  kubernetes_ca_cert = var.kubernetes_ca_cert
  # no token_reviewer_jwt: Vault reviews each login with the gateway's own token,
  # which the system:auth-delegator binding allows
  disable_local_ca_jwt = true
}

resource "vault_policy" "gateway" {
  name   = "fedgate-${var.cluster.name}"
  policy = <<-EOT
    # fedgate gateways of ${var.cluster.name}: issue their own certificates, nothing else
    path "${var.cluster.vault.pki_mount}/issue/${var.cluster.vault.pki_role}" {
      capabilities = ["create", "update"]
    }
    path "${var.cluster.vault.pki_mount}/cert/ca" {
      capabilities = ["read"]
    }
    path "auth/token/renew-self" {
      capabilities = ["update"]
    }
    %{if local.etcd_vault_role != null~}
    # the etcd client certificate (etcd.tls.vaultRole), CN ${local.etcd_user}
    path "${var.cluster.vault.pki_mount}/issue/${local.etcd_vault_role}" {
      capabilities = ["create", "update"]
    }
    %{endif~}
  EOT
}

# The gateways' etcd client certificates when the settings name etcd.tls.vaultRole: the
# only name this role issues is the cluster's etcd role (etcd takes the CN as the user;
# docs/security.md). etcd's --trusted-ca-file must hold this PKI mount's CA.
resource "vault_pki_secret_backend_role" "etcd_client" {
  count   = local.etcd_vault_role == null ? 0 : 1
  backend = var.cluster.vault.pki_mount
  name    = local.etcd_vault_role

  allowed_domains    = [local.etcd_user]
  allow_bare_domains = true
  allow_subdomains   = false
  allow_ip_sans      = false
  allow_localhost    = false
  enforce_hostnames  = false
  server_flag        = false
  client_flag        = true
  key_type           = "ec"
  key_bits           = 256
  max_ttl            = var.pki_max_ttl
  no_store           = true
}

resource "vault_kubernetes_auth_backend_role" "gateway" {
  backend                          = vault_auth_backend.kubernetes.path
  role_name                        = var.cluster.vault.auth_role
  bound_service_account_names      = [kubernetes_service_account_v1.gateway.metadata[0].name]
  bound_service_account_namespaces = [local.namespace]
  token_policies                   = [vault_policy.gateway.name]
  token_ttl                        = var.vault_token_ttl
  token_max_ttl                    = var.vault_token_ttl * 4
}

resource "vault_pki_secret_backend_role" "gateway" {
  backend = var.cluster.vault.pki_mount
  name    = var.cluster.vault.pki_role

  # public names (route hosts, the east-west host) and the east-west common name
  allowed_domains             = concat(var.cluster.vault.server_names, [var.cluster.vault.common_name])
  allow_bare_domains          = true
  allow_subdomains            = false
  allow_glob_domains          = true
  allow_wildcard_certificates = true
  allow_ip_sans               = true
  allow_localhost             = false
  enforce_hostnames           = true

  # the gateway's identity for mutual TLS between clusters
  allowed_uri_sans = [var.cluster.vault.spiffe_id]

  server_flag = true
  client_flag = true
  key_type    = "ec"
  key_bits    = 256
  max_ttl     = var.pki_max_ttl
  no_store    = true
}
