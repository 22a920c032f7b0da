# What the pod takes from gateway.yaml: the listeners' ports, the files it mounts and
# where, the scheme of the kubelet's probes, and etcd's TLS material. These locals and
# checks depend on the variables alone (no provider), so the tests evaluate them offline
# (tests/terraform/test_pod_settings.py).

locals {
  settings = yamldecode(var.settings_yaml)

  port = {
    public     = tonumber(element(split(":", local.settings.listen.public), -1))
    public_tls = try(tonumber(element(split(":", local.settings.listen.publicTls), -1)), null)
    east_west  = tonumber(element(split(":", local.settings.listen.eastWest), -1))
    admin      = tonumber(element(split(":", local.settings.listen.admin), -1))
    # the authoritative DNS listener (listen.dns, UDP and TCP), when the settings name it
    dns = try(tonumber(element(split(":", local.settings.listen.dns), -1)), null)
  }

  token_file = try(local.settings.admin.tokenFile, "/run/secrets/fedgate/admin-token")
  vault_ca   = try(local.settings.vault.caCert, null) # where the gateway reads Vault's CA
  token_dir  = dirname(local.token_file)
  snapshot   = try(local.settings.snapshot, "/var/lib/fedgate/view.json")

  # The kubelet probes the admin listener in the listener's own scheme. With admin.tls
  # the probes are HTTPS: the kubelet does not verify the certificate (it names the
  # public hosts, not the pod IP), and /healthz and /readyz need no token. A plain probe
  # of a TLS listener fails, and the pod would never be ready.
  admin_scheme = try(local.settings.admin.tls, false) == true ? "HTTPS" : "HTTP"

  # etcd over mutual TLS (etcd.tls): the CA and the client certificate, each in its own
  # folder (one volume each). With vaultRole the gateway issues the certificate itself
  # into an in-memory emptyDir; without, it comes from the Secret etcd_client_secret.
  etcd_tls        = try(local.settings.etcd.tls, null)
  etcd_ca         = try(local.etcd_tls.ca, null)
  etcd_cert       = try(local.etcd_tls.cert, null)
  etcd_key        = try(local.etcd_tls.key, null)
  etcd_vault_role = try(local.etcd_tls.vaultRole, null)
  etcd_ca_dir     = local.etcd_ca == null ? null : dirname(local.etcd_ca)
  etcd_client_dir = local.etcd_cert == null ? null : dirname(local.etcd_cert)
  etcd_user       = "fedgate-gateway-${var.cluster.name}" # federation/keys.py role_name

  # every folder the container mounts: one volume each, none inside another's place
  mount_dirs = [
    for d in [
      "/etc/fedgate", local.token_dir, dirname(local.snapshot), "/tmp",
      local.vault_ca == null ? null : dirname(local.vault_ca), local.etcd_ca_dir, local.etcd_client_dir,
    ] : d if d != null
  ]
}

# The checks of the settings against this module's inputs (a failed one stops the plan).
resource "terraform_data" "pod_settings" {
  input = {
    admin_scheme = local.admin_scheme
    mount_dirs   = local.mount_dirs
  }

  lifecycle {
    precondition {
      condition     = length(distinct(local.mount_dirs)) == length(local.mount_dirs)
      error_message = "Two of the pod's files would be mounted at one folder (settings /etc/fedgate, admin token, snapshot, /tmp, Vault CA, etcd CA, etcd client certificate): give each its own folder in gateway.yaml."
    }

    precondition {
      condition     = local.etcd_cert == null || (local.etcd_key != null && dirname(coalesce(local.etcd_key, "/")) == local.etcd_client_dir)
      error_message = "etcd.tls.cert and etcd.tls.key must be in one folder (one volume)."
    }

    precondition {
      condition     = local.etcd_tls == null || local.etcd_cert != null
      error_message = "etcd.tls without cert: etcd's roles are given by the client certificate's CN (fedgate-gateway-<cluster>); name etcd.tls.cert and key."
    }

    precondition {
      condition     = local.etcd_cert == null || local.etcd_vault_role != null || var.etcd_client_secret != null
      error_message = "The settings name etcd.tls without vaultRole: give etcd_client_secret (a Secret with tls.crt and tls.key, CN fedgate-gateway-<cluster>)."
    }

    precondition {
      condition     = local.etcd_ca == null || var.etcd_ca_cert_pem != null || (local.etcd_vault_role == null && var.etcd_client_secret != null)
      error_message = "The settings name etcd.tls.ca: give etcd_ca_cert_pem (etcd's CA), or an etcd_client_secret that holds it as ca.crt."
    }
  }
}
