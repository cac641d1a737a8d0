// Package bench is Kindling's benchmark suite: Go benchmarks of catalog
// loading, group selection, rendering and the machine-plane HTTP handler
// over a generated data directory of many machines (bench_test.go), the
// generator behind them and behind bench/gendata, and load.sh, which runs
// wrk against a real server. README.md says how to run them and what the
// numbers were.
package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/kindlingboot/kindling/examples"
)

// Options says what Generate writes. The zero value writes 10,000
// machines from the embedded default example and no asset.
type Options struct {
	// Machines is how many machines (one group each); 0 means 10,000.
	Machines int
	// Examples is the data directory whose profiles/, ignition/ and
	// generic/ are copied; nil means the embedded examples/default.
	Examples fs.FS
	// AssetBytes is the size of assets/big.img; 0 means no asset. An
	// existing big.img of that size is kept, so reruns are quick.
	AssetBytes int64
	// MACFile is where the list of MACs is written, one per line in
	// iPXE's ${mac:hexhyp} form; empty means DIR/macs.txt (the catalog
	// only reads the data directory's subdirectories, so it is ignored).
	MACFile string
}

// Machine is one generated machine and the group that selects it.
type Machine struct {
	Group    string // group ID, mNNNNN
	MAC      string // 52:54:xx:xx:xx:xx, canonical form
	Hostname string // nodeN
	Profile  string // install or live
}

// HexHyp is the MAC as iPXE sends it (${mac:hexhyp}): 52-54-00-00-00-01.
func (m Machine) HexHyp() string { return strings.ReplaceAll(m.MAC, ":", "-") }

// SSHKey is the public key every generated machine is given.
const SSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleReplaceWithYourOwnKeyxxxxxxxxxxxxxx kindling-bench"

// MachineN is the i-th machine (i ≥ 1): the MAC holds i in its last four
// bytes; odd machines install to disk (profile install, Butane template
// ignition/installed.yaml), even ones boot live (ignition/live.yaml).
func MachineN(i int) Machine {
	p := "live"
	if i%2 == 1 {
		p = "install"
	}
	return Machine{
		Group:    fmt.Sprintf("m%05d", i),
		MAC:      fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i)),
		Hostname: fmt.Sprintf("node%d", i),
		Profile:  p,
	}
}

// Generate writes a data directory at dir: groups/mNNNNN.json selecting
// one MAC each, profiles/, ignition/ and generic/ copied from the
// examples, the MAC list, and optionally assets/big.img. Catalog
// subdirectories already in dir are replaced.
func Generate(dir string, o Options) ([]Machine, error) {
	n := o.Machines
	if n <= 0 {
		n = 10_000
	}
	src := o.Examples
	if src == nil {
		src = examples.Default
	}
	for _, sub := range []string{"groups", "profiles", "ignition", "generic", "templates"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return nil, err
		}
	}
	for _, sub := range []string{"profiles", "ignition", "generic"} {
		if err := copyDir(src, sub, filepath.Join(dir, sub)); err != nil {
			return nil, fmt.Errorf("copying %s: %w", sub, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "groups"), 0o755); err != nil {
		return nil, err
	}
	ms := make([]Machine, n)
	var macs strings.Builder
	for i := range ms {
		m := MachineN(i + 1)
		ms[i] = m
		g := map[string]any{
			"id":       m.Group,
			"name":     "bench machine " + m.Hostname,
			"profile":  m.Profile,
			"selector": map[string]string{"mac": m.MAC},
			"metadata": map[string]any{
				"hostname":            m.Hostname,
				"ssh_authorized_keys": []string{SSHKey},
			},
		}
		b, err := json.MarshalIndent(g, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "groups", m.Group+".json"), append(b, '\n'), 0o644); err != nil {
			return nil, err
		}
		macs.WriteString(m.HexHyp())
		macs.WriteByte('\n')
	}
	macFile := o.MACFile
	if macFile == "" {
		macFile = filepath.Join(dir, "macs.txt")
	}
	if err := os.WriteFile(macFile, []byte(macs.String()), 0o644); err != nil {
		return nil, err
	}
	if o.AssetBytes > 0 {
		if err := writeAsset(filepath.Join(dir, "assets", "big.img"), o.AssetBytes); err != nil {
			return nil, fmt.Errorf("writing asset: %w", err)
		}
	}
	return ms, nil
}

func copyDir(src fs.FS, sub, to string) error {
	ents, err := fs.ReadDir(src, sub)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := fs.ReadFile(src, path.Join(sub, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeAsset writes size pseudo-random bytes (not zeros, so nothing can
// serve it as a sparse file), unless a file of that size is already there.
func writeAsset(name string, size int64) error {
	if fi, err := os.Stat(name); err == nil && fi.Size() == size {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	r := rand.NewChaCha8([32]byte{'k', 'i', 'n', 'd', 'l', 'i', 'n', 'g'})
	if _, err := io.CopyN(f, r, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
