// Package boot is what the agent does when it runs as the first process
// (PID 1) of Kindling's initramfs: Setup mounts the kernel's filesystems,
// loads the modules the initramfs carries, and brings up the boot network
// interface by DHCP (or from a static ip= argument); Finish ends the boot by
// rebooting, powering off, or switching into the installed root.
//
// # Kernel arguments
//
// The agent is configured entirely by the kernel command line, which a
// Kindling profile sets:
//
//	BOOTIF=01-aa-bb-cc-dd-ee-ff   the boot interface's MAC (iPXE:
//	                              BOOTIF=01-${netX/mac:hexhyp}); without it,
//	                              the first interface with a carrier
//	ip=dhcp | ip=off | ip=CLIENT::GATEWAY:NETMASK:HOSTNAME:DEVICE:off:DNS0:DNS1
//	                              DHCP (the default), no network, or a
//	                              static address (the kernel's nfsroot
//	                              format; iPXE knows ${netX/ip} etc.)
//	kindling.net.timeout=30s      how long to wait for the interface and a
//	                              DHCP lease together
//	kindling.finish=reboot|poweroff|switchroot|shell
//	                              how Finish ends the boot (default reboot)
//	kindling.install.dev=/dev/vda        installer mode: the disk to write
//	kindling.install.image=URL           the raw disk image (plain, gzip,
//	                                     xz or zstd; http or https)
//	kindling.install.sha256=HEX          SHA-256 of the image file as served
//	kindling.install.root=LABEL          the installed root's GPT partition
//	                                     name or filesystem label (default root)
//	kindling.report.url=URL       where the agent reports its result
//	ignition.config.url=URL       the Ignition config
//	ignition.firstboot            present on a first boot
//
// The runner reads the kindling.install.*, kindling.report.url and
// ignition.* arguments through System.Cmdline; this package acts on
// BOOTIF, ip=, kindling.net.timeout and kindling.finish.
//
// # Initramfs contract
//
// Setup reads /etc/kindling/modules (one absolute module path a line,
// dependencies first; '#' starts a comment) and
// /etc/kindling/kernel-version, both written by assets/initramfs, and loads
// each module with finit_module(2): no modprobe is needed. A module that
// fails to load (hardware-specific drivers return ENODEV where the device
// is absent) is logged and skipped.
//
// DHCP needs the kernel's random number generator seeded. A machine with
// RDRAND is ready at once; a virtual machine without it (QEMU's TCG) must
// have a virtio RNG (QEMU: -device virtio-rng-pci; the initramfs loads
// virtio_rng), or Setup waits, saying so, until kindling.net.timeout.
//
// The lease is not renewed: the agent's work takes minutes, and DHCP
// servers hand out leases of an hour or more.
//
// The agent does not reap orphaned processes: the tools it runs are waited
// for, and none of them daemonise.
package boot

// Kernel arguments, as documented in the package comment.
const (
	ArgBootIF        = "BOOTIF"
	ArgIP            = "ip"
	ArgNetTimeout    = "kindling.net.timeout"
	ArgFinish        = "kindling.finish"
	ArgInstallDev    = "kindling.install.dev"
	ArgInstallImage  = "kindling.install.image"
	ArgInstallSHA256 = "kindling.install.sha256"
	ArgInstallRoot   = "kindling.install.root"
	ArgReportURL     = "kindling.report.url"
	ArgConfigURL     = "ignition.config.url"
	ArgFirstBoot     = "ignition.firstboot"
)
