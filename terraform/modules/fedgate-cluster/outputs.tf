output "namespace" {
  description = "The namespace the gateways run in."
  value       = local.namespace
}

output "service_account" {
  description = "The gateways' service account (bound to Vault's Kubernetes auth role)."
  value       = kubernetes_service_account_v1.gateway.metadata[0].name
}

output "public_service" {
  description = "The public Service (its load balancer address is in status once provisioned)."
  value       = "${local.namespace}/${kubernetes_service_v1.public.metadata[0].name}"
}

output "east_west_service" {
  description = "The east-west Service, namespace/name."
  value       = "${local.namespace}/${kubernetes_service_v1.east_west.metadata[0].name}"
}

output "east_west_ingress" {
  description = "The east-west load balancer's address, to put in the manifest's gateway.eastWest."
  value       = try(kubernetes_service_v1.east_west.status[0].load_balancer[0].ingress, [])
}

output "vault_auth_mount" {
  description = "This cluster's Kubernetes auth mount in Vault."
  value       = vault_auth_backend.kubernetes.path
}

output "vault_pki_role" {
  description = "The PKI role this cluster's gateways issue their certificates from."
  value       = vault_pki_secret_backend_role.gateway.name
}

output "etcd_user" {
  description = "The etcd user (and role, and client certificate CN) of this cluster's gateways: fedgate-gateway-<cluster>."
  value       = local.etcd_user
}

output "dns_service" {
  description = "The DNS Service, namespace/name (null without listen.dns); its load balancer address is the glue to publish (dns_advertise)."
  value       = local.port.dns == null ? null : "${local.namespace}/${kubernetes_service_v1.dns[0].metadata[0].name}"
}
