terraform {
  required_version = ">= 1.6"

  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.31.0, < 3.0.0"
    }
    vault = {
      source  = "hashicorp/vault"
      version = ">= 4.2.0, < 6.0.0"
    }
  }
}
