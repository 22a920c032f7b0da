variable "manifest_json_path" {
  description = "The federation manifest as fedgate renders it: `fedgate render ../../../clusters.example.yaml > federation.json` (fedgate parses and validates it; Terraform only reads the result)."
  type        = string
  default     = "federation.json"
}

variable "image" {
  description = "The gateway image, built from the repository's Dockerfile and pushed to a registry every cluster can pull from."
  type        = string
}

variable "admin_token" {
  description = "The admin API bearer token of every cluster not named in admin_tokens."
  type        = string
  sensitive   = true
}

variable "admin_tokens" {
  description = "Per-cluster admin tokens (cluster name -> token): a token leaked from one cluster opens no other. Better still, admin_token_secret on the cluster module keeps them out of the state."
  type        = map(string)
  sensitive   = true
  default     = {}
}

variable "etcd_endpoints" {
  description = "The federation's etcd cluster, reachable from every cluster: https:// (mutual TLS, etcd_tls)."
  type        = list(string)
}

variable "etcd_tls" {
  description = "etcd over mutual TLS (the fedgate-settings module's etcd_tls): file paths in the pod and, with vault_role_format, client certificates issued by Vault. Null only with http:// endpoints (development)."
  type = object({
    ca                = optional(string, "/etc/fedgate-etcd/ca/ca.crt")
    cert              = optional(string, "/etc/fedgate-etcd/client/tls.crt")
    key               = optional(string, "/etc/fedgate-etcd/client/tls.key")
    vault_role_format = optional(string)
  })
  default = {}
}

variable "etcd_ca_cert_pem" {
  description = "PEM of the CA that signed etcd's server certificates (mounted in every gateway pod)."
  type        = string
  default     = null
}

variable "etcd_client_secrets" {
  description = "Per cluster (name -> Secret name): an existing kubernetes.io/tls Secret with the gateways' etcd client certificate, CN fedgate-gateway-<cluster>. Not needed with etcd_tls.vault_role_format."
  type        = map(string)
  default     = {}
}

variable "vault_addr" {
  description = "Vault (or OpenBao), reachable from every cluster."
  type        = string
}

variable "trust_domain" {
  description = "SPIFFE trust domain of the gateways' east-west certificates."
  type        = string
  default     = "fedgate.local"
}

variable "pki_mount" {
  description = "The PKI mount (with its CA) shared by the federation; created beforehand (docs/deploy.md)."
  type        = string
  default     = "pki"
}

# one kubeconfig context per cluster: two clouds and one on-prem site
variable "aws_eu" {
  description = "The AWS cluster: its manifest name, kubeconfig and the API address Vault uses."
  type = object({
    cluster         = optional(string, "aws-eu-west-1")
    config_path     = optional(string, "~/.kube/config")
    config_context  = string
    kubernetes_host = string
    ca_cert         = optional(string)
  })
}

variable "gcp_eu" {
  description = "The GCP cluster."
  type = object({
    cluster         = optional(string, "gcp-europe-west4")
    config_path     = optional(string, "~/.kube/config")
    config_context  = string
    kubernetes_host = string
    ca_cert         = optional(string)
  })
}

variable "onprem" {
  description = "The on-prem site's cluster."
  type = object({
    cluster         = optional(string, "onprem-fra1")
    config_path     = optional(string, "~/.kube/config")
    config_context  = string
    kubernetes_host = string
    ca_cert         = optional(string)
  })
}
