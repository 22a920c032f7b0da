# Copied next to the cluster module's variables.tf and pod_settings.tf by
# tests/terraform/test_pod_settings.py: what the pod takes from gateway.yaml, offline.

output "admin_scheme" {
  value = local.admin_scheme
}

output "port" {
  value = local.port
}

output "etcd" {
  value = {
    ca         = local.etcd_ca
    cert       = local.etcd_cert
    key        = local.etcd_key
    vault_role = local.etcd_vault_role
    ca_dir     = local.etcd_ca_dir
    client_dir = local.etcd_client_dir
    user       = local.etcd_user
  }
}

output "mount_dirs" {
  value = local.mount_dirs
}
