package boot

import (
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// inNetns runs f on a thread moved into a new, empty network namespace.
// The thread is never returned to the scheduler: it ends with f.
func inNetns(t *testing.T, f func() error) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("a network namespace needs root")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- errSkip{err}
			return
		}
		errc <- f()
	}()
	err := <-errc
	var skip errSkip
	if errors.As(err, &skip) {
		t.Skipf("unshare(CLONE_NEWNET): %v", skip.err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

type errSkip struct{ err error }

func (e errSkip) Error() string { return e.err.Error() }

// TestConfigureNetlink applies leases to the loopback interface of a new
// network namespace through the rtnetlink client and reads the result
// back from the kernel.
func TestConfigureNetlink(t *testing.T) {
	inNetns(t, func() error {
		nl, err := openRtnl()
		if err != nil {
			return err
		}
		defer nl.Close()
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		if err := nl.linkUp(lo.Index); err != nil {
			return err
		}
		l := &Lease{Address: net.IPNet{IP: net.IPv4(10, 99, 0, 5).To4(), Mask: net.CIDRMask(24, 32)}, Router: net.IPv4(10, 99, 0, 1).To4(), MTU: 9000}
		if err := configure(nl, lo.Index, l); err != nil {
			return err
		}
		lo, _ = net.InterfaceByName("lo")
		addrs, _ := lo.Addrs()
		var got []string
		for _, a := range addrs {
			got = append(got, a.String())
		}
		if !strings.Contains(strings.Join(got, " "), "10.99.0.5/24") {
			t.Errorf("after configure(%v): lo addresses %v, want 10.99.0.5/24", l.Address, got)
		}
		if lo.MTU != 9000 || lo.Flags&net.FlagUp == 0 {
			t.Errorf("after configure: lo MTU %d, flags %v; want 9000, up", lo.MTU, lo.Flags)
		}
		routes, _ := os.ReadFile("/proc/thread-self/net/route")
		// Destination 0.0.0.0 via 10.99.0.1, little-endian hex.
		if !strings.Contains(string(routes), "lo\t00000000\t0100630A") {
			t.Errorf("after configure: routes\n%s\nwant a default route via 10.99.0.1", routes)
		}
		// Classless static routes replace the router option.
		l.Routes = []Route{{Dest: &net.IPNet{IP: net.IPv4(10, 98, 0, 0).To4(), Mask: net.CIDRMask(16, 32)}, Gateway: net.IPv4(10, 99, 0, 2).To4()}}
		if err := configure(nl, lo.Index, l); err != nil {
			return err
		}
		routes, _ = os.ReadFile("/proc/thread-self/net/route")
		if !strings.Contains(string(routes), "lo\t0000620A\t0200630A") {
			t.Errorf("after configure with classless routes: routes\n%s\nwant 10.98.0.0/16 via 10.99.0.2", routes)
		}
		err = nl.addRoute(lo.Index, nil, net.IPv4(192, 0, 2, 1))
		if err == nil || !strings.Contains(err.Error(), "adding route default via 192.0.2.1") {
			t.Errorf("addRoute(via an unreachable gateway) = %v, want an error naming it", err)
		}
		return nil
	})
}
