# Three clusters of one manifest: AWS (eu-west-1), GCP (europe-west4) and the on-prem
# site in Frankfurt. The manifest may list more clusters; each gets its gateways from
# another instance of the fedgate-cluster module with its own provider alias.

module "settings" {
  source = "../../modules/fedgate-settings"

  manifest_json_path = var.manifest_json_path
  etcd_endpoints     = var.etcd_endpoints
  etcd_tls           = var.etcd_tls
  vault = {
    addr         = var.vault_addr
    pki_mount    = var.pki_mount
    trust_domain = var.trust_domain
  }
}

module "aws_eu" {
  source    = "../../modules/fedgate-cluster"
  providers = { kubernetes = kubernetes.aws_eu, vault = vault }

  cluster            = module.settings.clusters[var.aws_eu.cluster]
  settings_yaml      = module.settings.settings[var.aws_eu.cluster]
  image              = var.image
  admin_token        = lookup(var.admin_tokens, var.aws_eu.cluster, var.admin_token)
  kubernetes_host    = var.aws_eu.kubernetes_host
  kubernetes_ca_cert = var.aws_eu.ca_cert
  etcd_ca_cert_pem   = var.etcd_ca_cert_pem
  etcd_client_secret = lookup(var.etcd_client_secrets, var.aws_eu.cluster, null)

  public_service_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type" = "nlb"
  }
  east_west_service_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type" = "nlb"
  }
}

module "gcp_eu" {
  source    = "../../modules/fedgate-cluster"
  providers = { kubernetes = kubernetes.gcp_eu, vault = vault }

  cluster            = module.settings.clusters[var.gcp_eu.cluster]
  settings_yaml      = module.settings.settings[var.gcp_eu.cluster]
  image              = var.image
  admin_token        = lookup(var.admin_tokens, var.gcp_eu.cluster, var.admin_token)
  kubernetes_host    = var.gcp_eu.kubernetes_host
  kubernetes_ca_cert = var.gcp_eu.ca_cert
  etcd_ca_cert_pem   = var.etcd_ca_cert_pem
  etcd_client_secret = lookup(var.etcd_client_secrets, var.gcp_eu.cluster, null)
}

module "onprem" {
  source    = "../../modules/fedgate-cluster"
  providers = { kubernetes = kubernetes.onprem, vault = vault }

  cluster            = module.settings.clusters[var.onprem.cluster]
  settings_yaml      = module.settings.settings[var.onprem.cluster]
  image              = var.image
  admin_token        = lookup(var.admin_tokens, var.onprem.cluster, var.admin_token)
  kubernetes_host    = var.onprem.kubernetes_host
  kubernetes_ca_cert = var.onprem.ca_cert
  etcd_ca_cert_pem   = var.etcd_ca_cert_pem
  etcd_client_secret = lookup(var.etcd_client_secrets, var.onprem.cluster, null)

  # behind the site's own load balancers (MetalLB, F5, ...)
  public_service_type    = "NodePort"
  east_west_service_type = "NodePort"
  min_replicas           = 2
  max_replicas           = 4
}
