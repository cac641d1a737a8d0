# A three-member etcd cluster of Fedora CoreOS controllers, known by MAC,
# installed to disk, plus a default group that boots any other machine into
# a live system in RAM (it touches no disk). See README.md.

terraform {
  required_providers {
    kindling = {
      source = "kindlingboot/kindling"
    }
  }
}

# The certificates are those of `kindling certs init ./certs …`; the
# endpoint is the server's -rpc-address.
provider "kindling" {
  endpoint    = var.endpoint
  ca          = file("${var.certs}/ca.crt")
  client_cert = file("${var.certs}/client.crt")
  client_key  = file("${var.certs}/client.key")
}

locals {
  fcos = "/assets/fedora-coreos"

  # One entry per controller: its boot MAC and its address.
  controllers = {
    node1 = { mac = "52:54:00:e7:cd:01", ip = "10.77.0.21" }
    node2 = { mac = "52:54:00:e7:cd:02", ip = "10.77.0.22" }
    node3 = { mac = "52:54:00:e7:cd:03", ip = "10.77.0.23" }
  }
}

# Controllers: the Fedora CoreOS installer writes the OS to the disk, then
# the installed system applies butane/controller.yaml (rendered per machine
# with its group's metadata).
resource "kindling_profile" "controller" {
  name   = "controller"
  kernel = "${local.fcos}/fedora-coreos-live-kernel.x86_64"
  initrd = ["--name main ${local.fcos}/fedora-coreos-live-initramfs.x86_64.img"]
  args = [
    "initrd=main",
    "coreos.live.rootfs_url=http://{{.request.host}}${local.fcos}/fedora-coreos-live-rootfs.x86_64.img",
    "coreos.inst.install_dev=${var.install_disk}",
    "coreos.inst.ignition_url=http://{{.request.host}}/ignition?mac=$${mac:hexhyp}",
    "console=tty0",
    "console=ttyS0,115200n8",
  ]
  butane = file("${path.module}/butane/controller.yaml")
}

# Any other machine: Fedora CoreOS live in RAM, with SSH access.
resource "kindling_profile" "live" {
  name   = "live"
  kernel = "${local.fcos}/fedora-coreos-live-kernel.x86_64"
  initrd = ["--name main ${local.fcos}/fedora-coreos-live-initramfs.x86_64.img"]
  args = [
    "initrd=main",
    "coreos.live.rootfs_url=http://{{.request.host}}${local.fcos}/fedora-coreos-live-rootfs.x86_64.img",
    "ignition.firstboot",
    "ignition.platform.id=metal",
    "ignition.config.url=http://{{.request.host}}/ignition?mac=$${mac:hexhyp}",
    "console=tty0",
    "console=ttyS0,115200n8",
  ]
  butane = file("${path.module}/butane/live.yaml")
}

resource "kindling_group" "controller" {
  for_each = local.controllers

  name     = each.key
  profile  = kindling_profile.controller.name
  selector = { mac = each.value.mac }
  metadata = {
    cluster             = "etcd"
    name                = each.key
    ip                  = each.value.ip
    ssh_authorized_keys = var.ssh_authorized_keys
  }
}

# No selector: the group every machine without a more specific one gets.
resource "kindling_group" "default" {
  name    = "default"
  profile = kindling_profile.live.name
  metadata = {
    ssh_authorized_keys = var.ssh_authorized_keys
  }
}
