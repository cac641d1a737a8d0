// Command testinit is the /init of the boot package's QEMU test: it runs
// boot.Setup, prints the lease, and ends with boot.Finish. With
// kindling.test=switchroot it mounts /dev/vda on /sysroot and switches
// into it, where the same binary runs again as /sbin/init. With
// kindling.test=install it installs the image of the kindling.install.*
// arguments, mounts the root it finds, writes a marker file there and
// powers off.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/kindlingboot/kindling/ignition/boot"
	"github.com/kindlingboot/kindling/ignition/install"
	"golang.org/x/sys/unix"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	if os.Args[0] == "/sbin/init" {
		// After the switch: the kernel's filesystems were moved along.
		_, err := os.Stat("/proc/self/mountinfo")
		fmt.Printf("KINDLING-TEST switched root: proc=%v marker=%v\n", err == nil, exists("/kindling-test-root"))
		unix.Sync()
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		return
	}
	fmt.Println("KINDLING-TEST init started")
	start := time.Now()
	sys, err := boot.Setup(ctx, log)
	if err != nil {
		fmt.Println("KINDLING-TEST setup failed:", err)
		boot.Finish(ctx, log, boot.Poweroff)
		return
	}
	l := sys.Lease
	fmt.Printf("KINDLING-TEST lease iface=%s ip=%s router=%s dns=%v modules=%d failed=%d setup=%s\n",
		l.Interface, l.Address.String(), l.Router, l.DNS, len(sys.Modules), len(sys.Failed), time.Since(start).Round(time.Millisecond))
	if sys.Cmdline.Value("kindling.test") == "install" {
		c := sys.Cmdline
		res, err := install.Image(ctx, install.Options{Device: c.Value(boot.ArgInstallDev), URL: c.Value(boot.ArgInstallImage), SHA256: c.Value(boot.ArgInstallSHA256), Log: log})
		if err != nil {
			fmt.Println("KINDLING-TEST install failed:", err)
			boot.Finish(ctx, log, boot.Poweroff)
			return
		}
		fmt.Printf("KINDLING-TEST installed format=%s written=%d took=%s MB/s=%.1f\n", res.Format, res.Written, res.Duration.Round(time.Millisecond), res.MBps)
		root, err := install.FindRoot(ctx, c.Value(boot.ArgInstallDev), c.Value(boot.ArgInstallRoot))
		if err == nil {
			err = unix.Mount(root, boot.SysRoot, "ext4", 0, "")
		}
		if err == nil {
			err = os.WriteFile(boot.SysRoot+"/kindling-installed", []byte("ok\n"), 0o644)
		}
		if err != nil {
			fmt.Println("KINDLING-TEST root failed:", err)
		} else {
			fmt.Println("KINDLING-TEST root", root, "marker written")
		}
		boot.Finish(ctx, log, boot.Poweroff)
		return
	}
	if sys.Cmdline.Value("kindling.test") == "switchroot" {
		if err := unix.Mount("/dev/vda", boot.SysRoot, "ext4", 0, ""); err != nil {
			fmt.Println("KINDLING-TEST mount failed:", err)
			boot.Finish(ctx, log, boot.Poweroff)
			return
		}
	}
	err = boot.Finish(ctx, log, "")
	fmt.Println("KINDLING-TEST finish failed:", err)
	boot.Finish(ctx, log, boot.Poweroff)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
