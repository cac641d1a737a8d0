output "controllers" {
  description = "Controller groups and the MACs they select."
  value       = { for name, g in kindling_group.controller : name => g.selector.mac }
}
