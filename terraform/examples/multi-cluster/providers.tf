# One kubernetes provider per cluster (aliases), one Vault for the whole federation.

provider "kubernetes" {
  alias          = "aws_eu"
  config_path    = var.aws_eu.config_path
  config_context = var.aws_eu.config_context
}

provider "kubernetes" {
  alias          = "gcp_eu"
  config_path    = var.gcp_eu.config_path
  config_context = var.gcp_eu.config_context
}

provider "kubernetes" {
  alias          = "onprem"
  config_path    = var.onprem.config_path
  config_context = var.onprem.config_context
}

# VAULT_TOKEN (or another auth method of the provider) comes from the environment
provider "vault" {
  address = var.vault_addr
}
