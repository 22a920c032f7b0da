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
  description = "The container's image pull policy: Always, IfNotPresent or Never."
  type        = string
  default     = "IfNotPresent"

  validation {
    condition     = contains(["Always", "IfNotPresent", "Never"], var.image_pull_policy)
    error_message = "image_pull_policy must be Always, IfNotPresent or Never."
  }
}

variable "replicas" {
  description = "Initial replicas; the HPA moves them between min_replicas and max_replicas."
  type        = number
  default     = 2

  validation {
    condition     = var.replicas >= 1 && floor(var.replicas) == var.replicas
    error_message = "replicas must be a whole number, at least 1."
  }
}

variable "min_replicas" {
  description = "The HPA's lower bound (and the PodDisruptionBudget keeps all but one of them)."
  type        = number
  default     = 2

  validation {
    condition     = var.min_replicas >= 1 && floor(var.min_replicas) == var.min_replicas
    error_message = "min_replicas must be a whole number, at least 1."
  }
}

variable "max_replicas" {
  description = "The HPA's upper bound; at least min_replicas."
  type        = number
  default     = 10

  validation {
    condition     = var.max_replicas >= 1 && floor(var.max_replicas) == var.max_replicas
    error_message = "max_replicas must be a whole number, at least 1 (and at least min_replicas)."
  }
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

variable "etcd_ca_cert_pem" {
  description = "PEM of the CA that signed etcd's server certificates, mounted at the settings' etcd.tls.ca. Null: the ca.crt of etcd_client_secret (not possible with etcd.tls.vaultRole)."
  type        = string
  default     = null
}

variable "etcd_client_secret" {
  description = "Name of an existing Secret (in the namespace; type kubernetes.io/tls, e.g. from cert-manager) with the gateways' etcd client certificate: tls.crt with CN fedgate-gateway-<cluster> (the etcd role `fedgate etcd-bootstrap` creates), tls.key, and optionally ca.crt. Mounted at the settings' etcd.tls.cert and key. Not needed when the settings name etcd.tls.vaultRole: the gateways then issue it from Vault PKI, and this module makes that PKI role."
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
  description = "The public Service's type: LoadBalancer (a cloud load balancer), NodePort or ClusterIP (behind your own ingress)."
  type        = string
  default     = "LoadBalancer"

  validation {
    condition     = contains(["ClusterIP", "NodePort", "LoadBalancer"], var.public_service_type)
    error_message = "public_service_type must be ClusterIP, NodePort or LoadBalancer."
  }
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

  validation {
    condition     = contains(["NodePort", "LoadBalancer"], var.east_west_service_type)
    error_message = "east_west_service_type must be LoadBalancer or NodePort: other clusters' gateways must reach it."
  }
}

variable "east_west_service_annotations" {
  description = "Annotations of the east-west Service (cloud load balancer settings)."
  type        = map(string)
  default     = {}
}

variable "dns_service_type" {
  description = "The DNS Service (UDP and TCP 53), made when the settings name listen.dns: LoadBalancer (its address is the glue of the cluster's NS name: dns_advertise in the settings module), NodePort or ClusterIP."
  type        = string
  default     = "LoadBalancer"

  validation {
    condition     = contains(["ClusterIP", "NodePort", "LoadBalancer"], var.dns_service_type)
    error_message = "dns_service_type must be ClusterIP, NodePort or LoadBalancer."
  }
}

variable "dns_service_annotations" {
  description = "Annotations of the DNS Service (cloud load balancer settings)."
  type        = map(string)
  default     = {}
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

# ------------------------------------------------ image pull, Vault CA, Prometheus

variable "image_pull_secrets" {
  description = "Names of Secrets (type kubernetes.io/dockerconfigjson, in the namespace) to pull the image from a private registry."
  type        = list(string)
  default     = []
}

variable "vault_ca_cert_pem" {
  description = "PEM of the CA that signed Vault's own certificate. Needed when the settings set vault.caCert: it is mounted at that path."
  type        = string
  default     = null
}

variable "prometheus_scrape" {
  description = "Annotate the pods for Prometheus (prometheus.io/scrape, port, path: /metrics on the admin port, which needs the admin token unless the settings set admin.publicMetrics)."
  type        = bool
  default     = true
}
