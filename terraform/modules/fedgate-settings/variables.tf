variable "manifest_json_path" {
  description = "The federation manifest as `fedgate render clusters.yaml > federation.json` prints it: parsed and validated by fedgate itself, every default filled in."
  type        = string

  validation {
    condition     = fileexists(var.manifest_json_path)
    error_message = "The rendered manifest does not exist: run `fedgate render clusters.yaml > federation.json` first."
  }

  validation {
    condition     = try(jsondecode(file(var.manifest_json_path)).kind, "") == "Federation" && try(jsondecode(file(var.manifest_json_path)).apiVersion, "") == "fedgate/v1"
    error_message = "The file is not the output of `fedgate render` (apiVersion fedgate/v1, kind Federation)."
  }
}

variable "clusters" {
  description = "Render only these clusters of the manifest (null: all of them)."
  type        = list(string)
  default     = null
}

variable "etcd_endpoints" {
  description = "The etcd endpoints every gateway uses: https://host:port with etcd_tls (mutual TLS, etcd's roles; docs/security.md), or http://host:port for a development etcd on a private network."
  type        = list(string)

  validation {
    condition     = length(var.etcd_endpoints) > 0 && alltrue([for e in var.etcd_endpoints : can(regex("^https?://[^/]+$", e))])
    error_message = "etcd_endpoints needs at least one http(s)://host:port endpoint."
  }
}

variable "etcd_tls" {
  description = <<-EOT
    etcd over mutual TLS (docs/security.md): where the pod finds etcd's CA (`ca`) and its
    client certificate and key (`cert`, `key`; CN = the cluster's etcd role,
    fedgate-gateway-<cluster>, as `fedgate etcd-bootstrap` creates it). With
    `vault_role_format` (a format() string that receives the cluster name) the gateway
    issues that certificate from Vault PKI itself (`etcd.tls.vaultRole`) and renews it;
    without, the fedgate-cluster module mounts it from a Kubernetes Secret. The CA and
    the client certificate sit in two folders: each is one volume in the pod (by
    default outside /etc/fedgate, the settings' own volume, so no mount is nested in it).
    Null: plain http:// endpoints (development only).
  EOT
  type = object({
    ca                = optional(string, "/etc/fedgate-etcd/ca/ca.crt")
    cert              = optional(string, "/etc/fedgate-etcd/client/tls.crt")
    key               = optional(string, "/etc/fedgate-etcd/client/tls.key")
    vault_role_format = optional(string)
  })
  default = null

  validation {
    condition = var.etcd_tls == null ? true : alltrue([
      for p in [var.etcd_tls.ca, var.etcd_tls.cert, var.etcd_tls.key] : startswith(p, "/") && !endswith(p, "/")
    ])
    error_message = "etcd_tls: ca, cert and key must be absolute file paths."
  }

  validation {
    condition     = var.etcd_tls == null ? true : dirname(var.etcd_tls.cert) == dirname(var.etcd_tls.key) && dirname(var.etcd_tls.ca) != dirname(var.etcd_tls.cert) && basename(var.etcd_tls.cert) != basename(var.etcd_tls.key)
    error_message = "etcd_tls: cert and key must be two files of one folder, and ca in another folder (each folder is one volume in the pod)."
  }

  validation {
    condition     = var.etcd_tls == null ? true : var.etcd_tls.vault_role_format == null || can(format(coalesce(var.etcd_tls.vault_role_format, "%s"), "x"))
    error_message = "etcd_tls.vault_role_format must be a format() string such as \"fedgate-etcd-%s\"."
  }
}

variable "etcd_prefix" {
  description = "The etcd key prefix of the federation."
  type        = string
  default     = "/fedgate/"

  validation {
    condition     = startswith(var.etcd_prefix, "/") && endswith(var.etcd_prefix, "/")
    error_message = "etcd_prefix must start and end with '/'."
  }
}

variable "vault" {
  description = <<-EOT
    Vault (or OpenBao) settings. Each cluster logs in through its own Kubernetes auth
    mount and issues from its own PKI role: `auth_mount_format` and `pki_role_format`
    are format() strings that receive the cluster name.
  EOT
  type = object({
    addr              = string
    auth_role         = optional(string, "fedgate")
    auth_mount_format = optional(string, "kubernetes-%s")
    pki_mount         = optional(string, "pki")
    pki_role_format   = optional(string, "fedgate-%s")
    trust_domain      = optional(string, "fedgate.local")
    ttl               = optional(string, "24h")
    ca_cert           = optional(string)
  })

  validation {
    condition     = can(regex("^https?://", var.vault.addr))
    error_message = "vault.addr must be an http(s):// URL."
  }
}

variable "server_names" {
  description = "Extra public TLS server names per cluster (added to the route hosts of its services)."
  type        = map(list(string))
  default     = {}
}

variable "listen" {
  description = "Listen addresses inside the pod (the admin listener must be reachable by the kubelet probes); public_tls = \"\" turns the TLS listener off; dns = \"0.0.0.0:53\" turns the authoritative DNS listener on (UDP and TCP, docs/dns.md), \"\" (default) leaves it off."
  type = object({
    public     = optional(string, "0.0.0.0:8080")
    public_tls = optional(string, "0.0.0.0:8443")
    east_west  = optional(string, "0.0.0.0:15443")
    admin      = optional(string, "0.0.0.0:9901")
    dns        = optional(string, "")
  })
  default = {}
}

variable "dns_advertise" {
  description = "Per cluster: the public IP:port where resolvers reach its gateways' DNS listener (its load balancer, UDP and TCP 53). Published in the gateway record: the glue of the NS name ns-<cluster>.<zone>."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for c, a in var.dns_advertise : can(regex("^(\\[[0-9a-fA-F:.]+\\]|[0-9.]+):[0-9]+$", a))])
    error_message = "dns_advertise values must be IP:port (IPv6 in brackets)."
  }
}

variable "admin_tls" {
  description = "Serve the admin API over TLS with the gateway's Vault-issued public certificate (admin.tls). The fedgate-cluster module then probes it over HTTPS."
  type        = bool
  default     = false
}

variable "admin_token_file" {
  description = "Where the admin bearer token is mounted in the pod."
  type        = string
  default     = "/run/secrets/fedgate/admin-token"
}

variable "snapshot_path" {
  description = "The last-known-good routing view on disk (served while etcd is unreachable)."
  type        = string
  default     = "/var/lib/fedgate/view.json"
}
