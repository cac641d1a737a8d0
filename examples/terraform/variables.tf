variable "endpoint" {
  description = "The Kindling control plane, HOST:PORT (kindling serve -rpc-address)."
  type        = string
  default     = "127.0.0.1:8081"
}

variable "certs" {
  description = "Directory written by `kindling certs init` (ca.crt, client.crt, client.key)."
  type        = string
  default     = "certs"
}

variable "install_disk" {
  description = "The disk the controllers install Fedora CoreOS to."
  type        = string
  default     = "/dev/vda"
}

variable "ssh_authorized_keys" {
  description = "SSH public keys for the core user."
  type        = list(string)
  default     = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleReplaceWithYourOwnKeyxxxxxxxxxxxxxx kindling-example"]
}
