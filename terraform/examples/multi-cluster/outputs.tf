output "federation" {
  value = module.settings.federation
}

output "tiers" {
  value = module.settings.tiers
}

output "east_west" {
  description = "Per deployed cluster: the east-west load balancer (compare with gateway.eastWest in the manifest)."
  value = {
    (var.aws_eu.cluster) = module.aws_eu.east_west_ingress
    (var.gcp_eu.cluster) = module.gcp_eu.east_west_ingress
    (var.onprem.cluster) = module.onprem.east_west_ingress
  }
}

output "not_deployed_here" {
  description = "Clusters of the manifest this example does not deploy (add a module instance each)."
  value       = setsubtract(keys(module.settings.tiers), [var.aws_eu.cluster, var.gcp_eu.cluster, var.onprem.cluster])
}
