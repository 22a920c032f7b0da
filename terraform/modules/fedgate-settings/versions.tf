# Provider-less: this module only reads the manifest and renders text, so it plans,
# applies and tests offline.
terraform {
  required_version = ">= 1.6"
}
