variable "cluster" {
  description = "This cluster, as the fedgate-settings module describes it (its `clusters[name]` output)."
  type = object({
    name       = string
    namespaces = list(string)
    vault = object({
      auth_mount   = string
      auth_role    = string
      pki_mount    = string
      pki_role     = string
      trust_domain = string
      spiffe_id    = string
      common_name  = string
      server_names = list(string)
    })
  })
}

variable "settings_yaml" {
  description = "This cluster's gateway.yaml (the fedgate-settings module's `settings[name]` output)."
  type        = string

  validation {
    condition     = can(yamldecode(var.settings_yaml).cluster)
    error_message = "settings_yaml must be a gateway.yaml with a cluster name."
  }
}

variable "namespace" {
  description = "The namespace the gateways run in."
  type        = string
  default     = "fedgate"
}

variable "create_namespace" {
  description = "Create the namespace (false: it exists already)."
  type        = bool
  default     = true
}

variable "name" {
  description = "Name of the Deployment, service account and Services."
  type        = string
  default     = "fedgate"
}

variable "image" {
  description = "The gateway image (built from the repository's Dockerfile)."
  type        = string
}

variable "image_pull_policy" {
  type    = string
  default = "IfNotPresent"
}

variable "replicas" {
  description = "Initial replicas; the HPA moves them between min_replicas and max_replicas."
  type        = number
  default     = 2
}

variable "min_replicas" {
  type    = number
  default = 2

  validation {
    condition     = var.min_replicas >= 1
    error_message = "min_replicas must be at least 1."
  }
}

variable "max_replicas" {
  type    = number
  default = 10
}

variable "cpu_target_utilization" {
  description = "The HPA's average CPU utilization target (percent of the request)."
  type        = number
  default     = 70
}

variable "resources" {
  description = "Container requests and limits."
  type = object({
    requests = map(string)
    limits   = map(string)
  })
  default = {
    requests = { cpu = "500m", memory = "256Mi" }
    limits   = { memory = "512Mi" }
  }
}

variable "admin_token" {
  description = "Bearer token of this cluster's admin API (stored in a Secret, mounted at the settings' admin.tokenFile). One per cluster; null with admin_token_secret."
  type        = string
  sensitive   = true
  default     = null

  validation {
    condition     = var.admin_token == null || length(coalesce(var.admin_token, "x")) >= 16
    error_message = "admin_token must be at least 16 characters."
  }
}

variable "etcd_client_pki_role" {
  description = "Name of a PKI role (made here, per cluster) that issues the gateways' etcd client certificates, CN fedgate-gateway-<cluster>; set etcd.tls.vaultRole to it in the settings. Null: no such role (etcd client certificates come from files)."
  type        = string
  default     = null
}

variable "admin_token_secret" {
  description = "Name of an existing Secret (in the namespace) holding the admin token under the basename of admin.tokenFile, made outside Terraform (External Secrets, Vault agent...): the token stays out of the Terraform state. Null: the module makes the Secret from admin_token."
  type        = string
  default     = null
}

variable "network_policy" {
  description = "Create a NetworkPolicy: public and east-west ports open, the admin port only to metrics_scraper and admin_allowed_cidrs."
  type        = bool
  default     = true
}

variable "admin_allowed_cidrs" {
  description = "Operators' networks allowed to reach the admin API (fedgate health, the status page)."
  type        = list(string)
  default     = []
}

variable "metrics_scraper" {
  description = "The Prometheus pods allowed to reach the admin port (/metrics): label selectors of their namespace and pods. Null: none."
  type = object({
    namespace_labels = map(string)
    pod_labels       = optional(map(string), {})
  })
  default = null
}

variable "public_service_type" {
  type    = string
  default = "LoadBalancer"
}

variable "public_service_annotations" {
  description = "Annotations of the public Service (cloud load balancer settings)."
  type        = map(string)
  default     = {}
}

variable "east_west_service_type" {
  description = "The east-west Service: other clusters' gateways must reach it (LoadBalancer, or NodePort behind your own)."
  type        = string
  default     = "LoadBalancer"
}

variable "east_west_service_annotations" {
  type    = map(string)
  default = {}
}

variable "termination_grace_period_seconds" {
  description = "Longer than the gateway's drain timeout (limits.drainTimeout, 15 s by default)."
  type        = number
  default     = 30
}

variable "kubernetes_host" {
  description = "Where Vault reaches this cluster's API server (for TokenReview)."
  type        = string
}

variable "kubernetes_ca_cert" {
  description = "PEM CA of this cluster's API server, for Vault."
  type        = string
  default     = null
}

variable "vault_token_ttl" {
  description = "TTL (seconds) of the Vault tokens the gateways get at login."
  type        = number
  default     = 3600
}

variable "pki_max_ttl" {
  description = "Longest certificate TTL the PKI role allows (seconds)."
  type        = number
  default     = 259200
}

variable "labels" {
  description = "Extra labels on every Kubernetes object."
  type        = map(string)
  default     = {}
}
