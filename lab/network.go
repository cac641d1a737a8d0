package lab

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

func netnsExists(name string) bool {
	_, err := os.Stat(filepath.Join(netnsDir, name))
	return err == nil
}

// ip runs the ip tool (iproute2); the error carries its output.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// createNetns makes the lab network: namespace name with loopback, a
// bridge holding the server's addresses, and one tap per machine on the
// bridge. There is no uplink: nothing in the namespace reaches the host's
// networks. IPv6 on the bridge is only for router advertisements; when it
// cannot be added the lab works, with iPXE waiting for SLAAC (warned).
func createNetns(ctx context.Context, name string, taps []string, log *slog.Logger) error {
	steps := [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", bridgeName, "type", "bridge"},
		{"-n", name, "addr", "add", bridgeCIDR, "dev", bridgeName},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return err
		}
	}
	if err := ip(ctx, "-n", name, "-6", "addr", "add", bridgeIP6, "dev", bridgeName, "nodad"); err != nil {
		log.Warn("no IPv6 on the lab bridge: iPXE will wait about 13 s per boot for router advertisements", "error", err)
	}
	if err := ip(ctx, "-n", name, "link", "set", bridgeName, "up"); err != nil {
		return err
	}
	for _, tap := range taps {
		for _, s := range [][]string{
			{"-n", name, "tuntap", "add", "dev", tap, "mode", "tap"},
			{"-n", name, "link", "set", tap, "master", bridgeName},
			{"-n", name, "link", "set", tap, "up"},
		} {
			if err := ip(ctx, s...); err != nil {
				return err
			}
		}
	}
	return nil
}

// deleteNetns removes the namespace; its bridge and taps go with it once
// no process holds them.
func deleteNetns(ctx context.Context, name string) error {
	if !netnsExists(name) {
		return nil
	}
	return ip(ctx, "netns", "del", name)
}

// netnsPIDs lists the processes inside the named namespace, by comparing
// each /proc/PID/ns/net with the namespace's file (what `ip netns pids`
// does).
func netnsPIDs(name string) []int {
	fi, err := os.Stat(filepath.Join(netnsDir, name))
	if err != nil {
		return nil
	}
	want, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fi, err := os.Stat("/proc/" + e.Name() + "/ns/net")
		if err != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Ino == want.Ino && st.Dev == want.Dev {
			pids = append(pids, pid)
		}
	}
	return pids
}

// inNetns runs f on an OS thread switched into the named namespace.
// Sockets keep the namespace they were created in, so a connection made
// by f works from any goroutine afterwards. When the thread cannot be
// switched back it stays locked, and Go discards it when f's goroutine
// ends, so no other goroutine ever runs in the lab's namespace.
func inNetns(name string, f func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, name))
	if err != nil {
		return fmt.Errorf("opening network namespace %s: %w", name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering network namespace %s: %w", name, err)
			return
		}
		ferr := f()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// httpClient reaches the lab server: through the namespace for netns.
func httpClient(st *State) *http.Client {
	tr := &http.Transport{DisableKeepAlives: false, MaxIdleConnsPerHost: 4, ResponseHeaderTimeout: 3 * time.Second}
	if st.Network == "netns" && st.Netns != "" {
		ns := st.Netns
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := inNetns(ns, func() error {
				var err error
				c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// freePort picks a free TCP port on 127.0.0.1 (user networking).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
