output "namespace" {
  value = local.namespace
}

output "service_account" {
  value = kubernetes_service_account_v1.gateway.metadata[0].name
}

output "public_service" {
  description = "The public Service (its load balancer address is in status once provisioned)."
  value       = "${local.namespace}/${kubernetes_service_v1.public.metadata[0].name}"
}

output "east_west_service" {
  value = "${local.namespace}/${kubernetes_service_v1.east_west.metadata[0].name}"
}

output "east_west_ingress" {
  description = "The east-west load balancer's address, to put in the manifest's gateway.eastWest."
  value       = try(kubernetes_service_v1.east_west.status[0].load_balancer[0].ingress, [])
}

output "vault_auth_mount" {
  value = vault_auth_backend.kubernetes.path
}

output "vault_pki_role" {
  value = vault_pki_secret_backend_role.gateway.name
}
