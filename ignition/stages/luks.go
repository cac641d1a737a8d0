package stages

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"

	cutil "github.com/coreos/ignition/v2/config/util"
	"github.com/coreos/ignition/v2/config/v3_6/types"
)

// luksVolume is what Disks learned about a LUKS volume that Mount needs to
// write the volume's key file and crypttab entry into the target root.
type luksVolume struct {
	uuid string
	key  []byte
}

// luksState carries LUKS volumes from Disks to Mount, keyed by the Env the
// runner passes to both. Key material never leaves memory until Mount
// writes it into the target root.
var luksState = struct {
	sync.Mutex
	m map[*Env]map[string]luksVolume
}{m: map[*Env]map[string]luksVolume{}}

func rememberLuks(env *Env, name string, v luksVolume) {
	luksState.Lock()
	defer luksState.Unlock()
	if luksState.m[env] == nil {
		luksState.m[env] = map[string]luksVolume{}
	}
	luksState.m[env][name] = v
}

// takeLuks removes and returns what Disks remembered for env.
func takeLuks(env *Env) map[string]luksVolume {
	luksState.Lock()
	defer luksState.Unlock()
	m := luksState.m[env]
	delete(luksState.m, env)
	return m
}

// luksKeyDir is where key files live in the target root, as upstream.
const luksKeyDir = "/etc/luks"

// createLuks formats (or reuses) a LUKS2 volume and opens it as
// /dev/mapper/<name>. The key (fetched keyFile, or 4096 random bytes in hex
// when there is none) goes to cryptsetup on standard input, never on the
// command line or in a file outside the target. Without wipeVolume, an
// existing LUKS2 volume is reused when the key opens it and its label,
// uuid and discard flag match; any other content fails.
func (r *diskRun) createLuks(ctx context.Context, l types.Luks) error {
	if l.Clevis.IsPresent() {
		return Failf("luks "+l.Name, "clevis (tang/tpm2) is not supported by ignite")
	}
	if l.Cex.IsPresent() {
		return Failf("luks "+l.Name, "cex (IBM Crypto Express) is not supported by ignite")
	}
	if cutil.NilOrEmpty(l.Device) {
		return Failf("luks "+l.Name, "device is required")
	}
	if l.Name == "" || strings.Contains(l.Name, "/") {
		return Failf("luks "+l.Name, "name %q must be non-empty and contain no /", l.Name)
	}
	op := fmt.Sprintf("luks %s on %s", l.Name, *l.Device)
	mapper := "/dev/mapper/" + l.Name
	ref, err := r.device(ctx, *l.Device)
	if err != nil {
		return Fail(op, err)
	}
	wipe := cutil.IsTrue(l.WipeVolume)
	hasKeyFile := cutil.NotEmpty(l.KeyFile.Source)

	if r.env.Planning() {
		return r.planLuks(ctx, l, ref, op, mapper)
	}
	dev := ref.Path
	if why := blockUse(dev); why != "" {
		return Failf(op, "%s is %s", dev, why)
	}
	var key []byte
	if hasKeyFile {
		if r.env.Fetch == nil {
			return Failf(op, "keyFile has a source and no fetcher is configured")
		}
		if key, err = r.env.Fetch.Fetch(ctx, l.KeyFile); err != nil {
			return Fail(op, fmt.Errorf("fetching keyFile: %w", err))
		}
	} else {
		raw := make([]byte, 4096)
		if _, err := rand.Read(raw); err != nil {
			return Fail(op, fmt.Errorf("generating a key: %w", err))
		}
		key = []byte(hex.EncodeToString(raw))
		clear(raw)
	}
	kept := false // the key is handed to Mount
	defer func() {
		if !kept {
			clear(key)
		}
	}()

	if !wipe {
		isLuks2, err := r.isLuks(ctx, dev, true)
		if err != nil {
			return Fail(op, err)
		}
		if isLuks2 {
			if err := r.reuseLuks(ctx, l, dev, key, hasKeyFile); err != nil {
				return Failf(op, "%s is a LUKS2 volume that cannot be reused (%v), and wipeVolume is false", *l.Device, err)
			}
			kept, err = r.finishLuks(ctx, l, dev, key, op, mapper)
			return err
		}
		if isLuks1, err := r.isLuks(ctx, dev, false); err != nil {
			return Fail(op, err)
		} else if isLuks1 {
			return Failf(op, "%s is a LUKS1 volume, which ignite cannot reuse, and wipeVolume is false", *l.Device)
		}
		info, err := probeFS(ctx, r.env, ref)
		if err != nil {
			return Fail(op, err)
		}
		if info.Type != "" {
			return Failf(op, "%s holds %s and wipeVolume is false; set wipeVolume to replace it", *l.Device, info)
		}
	} else if _, err := r.env.Command(ctx, nil, "wipefs", "-a", dev); err != nil {
		return Fail(op, fmt.Errorf("wiping signatures: %w", err))
	}

	args := []string{"luksFormat", "--batch-mode", "--type", "luks2", "--key-file", "-"}
	if cutil.NotEmpty(l.Label) {
		args = append(args, "--label", *l.Label)
	}
	if cutil.NotEmpty(l.UUID) {
		args = append(args, "--uuid", *l.UUID)
	}
	for _, o := range l.Options {
		args = append(args, string(o))
	}
	r.env.Logger().Info("formatting luks volume", "name", l.Name, "device", *l.Device)
	if _, err := r.env.Command(ctx, bytes.NewReader(key), "cryptsetup", append(args, dev)...); err != nil {
		return Fail(op, err)
	}
	if _, err := r.env.Command(ctx, bytes.NewReader(key), "cryptsetup", luksOpenArgs(l, dev)...); err != nil {
		return Fail(op, fmt.Errorf("opening: %w", err))
	}
	kept, err = r.finishLuks(ctx, l, dev, key, op, mapper)
	return err
}

// finishLuks waits for the mapping and hands the volume (and its key) to
// Mount; kept reports the hand-over.
func (r *diskRun) finishLuks(ctx context.Context, l types.Luks, dev string, key []byte, op, mapper string) (kept bool, err error) {
	out, err := r.env.Command(ctx, nil, "cryptsetup", "luksUUID", dev)
	if err != nil {
		return false, Fail(op, err)
	}
	if _, err := r.device(ctx, mapper); err != nil {
		return false, Fail(op, fmt.Errorf("the mapping did not appear: %w", err))
	}
	settleUdev(ctx, r.env, dev)
	rememberLuks(r.env, l.Name, luksVolume{uuid: strings.TrimSpace(string(out)), key: key})
	return true, nil
}

// planLuks records what createLuks would do.
func (r *diskRun) planLuks(ctx context.Context, l types.Luks, ref blockRef, op, mapper string) error {
	mapRef := blockRef{Planned: fmt.Sprintf("luks %s, formatted by this config", l.Name)}
	detail := "luks2"
	if cutil.NotEmpty(l.Label) {
		detail += fmt.Sprintf(" labelled %q", *l.Label)
	}
	if !cutil.IsTrue(l.WipeVolume) && !ref.Unknown {
		info, err := probeFS(ctx, r.env, ref)
		if err != nil {
			return Fail(op, err)
		}
		switch {
		case info.Type == "crypto_LUKS":
			r.env.Record("luks", "check", l.Name, fmt.Sprintf("reuse the LUKS volume on %s if the key opens it and its label, uuid and discard flag match, else fail", *l.Device))
			r.plan(blockRef{Planned: fmt.Sprintf("luks %s, reused", l.Name), Unknown: true}, mapper, "/dev/disk/by-id/dm-name-"+l.Name)
			return nil
		case info.Type != "":
			return Failf(op, "%s holds %s and wipeVolume is false; set wipeVolume to replace it", *l.Device, info)
		}
	} else if !ref.Unknown {
		if info, err := probeFS(ctx, r.env, ref); err == nil && info.Type != "" {
			detail += ", replacing " + info.String()
		}
	}
	r.env.Record("luks", "create", l.Name, fmt.Sprintf("format %s as %s and open it as %s", *l.Device, detail, mapper))
	r.plan(mapRef, mapper, "/dev/disk/by-id/dm-name-"+l.Name)
	return nil
}

// isLuks reports whether dev holds a LUKS2 (luks2) or any LUKS volume.
func (r *diskRun) isLuks(ctx context.Context, dev string, luks2 bool) (bool, error) {
	args := []string{"isLuks", dev}
	if luks2 {
		args = append(args, "--type", "luks2")
	}
	_, err := r.env.Command(ctx, nil, "cryptsetup", args...)
	switch code := cmdExitCode(err); {
	case err == nil:
		return true, nil
	case code > 0:
		return false, nil
	}
	return false, err
}

// reuseLuks checks an existing LUKS2 volume against the config and opens
// it with the key.
func (r *diskRun) reuseLuks(ctx context.Context, l types.Luks, dev string, key []byte, hasKeyFile bool) error {
	if !hasKeyFile {
		return errors.New("the config has no keyFile, so the volume's key cannot be known")
	}
	if l.Label != nil {
		info, err := probeFS(ctx, r.env, blockRef{Path: dev})
		if err != nil {
			return err
		}
		if info.Label != *l.Label {
			return fmt.Errorf("label: wanted %q, found %q", *l.Label, info.Label)
		}
	}
	if l.UUID != nil {
		out, err := r.env.Command(ctx, nil, "cryptsetup", "luksUUID", dev)
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(out)); !strings.EqualFold(got, *l.UUID) {
			return fmt.Errorf("uuid: wanted %s, found %s", *l.UUID, got)
		}
	}
	out, err := r.env.Command(ctx, nil, "cryptsetup", "luksDump", "--dump-json-metadata", dev)
	if err != nil {
		return err
	}
	var dump struct {
		Config struct {
			Flags []string `json:"flags"`
		} `json:"config"`
	}
	if err := json.Unmarshal(out, &dump); err != nil {
		return fmt.Errorf("reading the LUKS2 metadata: %w", err)
	}
	if got, want := slices.Contains(dump.Config.Flags, "allow-discards"), cutil.IsTrue(l.Discard); got != want {
		return fmt.Errorf("discard: wanted %v, found %v", want, got)
	}
	if _, err := r.env.Command(ctx, bytes.NewReader(key), "cryptsetup", luksOpenArgs(l, dev)...); err != nil {
		return errors.New("the keyFile does not open it")
	}
	return nil
}

// luksOpenArgs opens a volume with the key on standard input, persisting
// the discard flag and open options in the LUKS2 header, as upstream.
func luksOpenArgs(l types.Luks, dev string) []string {
	args := []string{"luksOpen", dev, l.Name, "--key-file", "-", "--persistent"}
	if cutil.IsTrue(l.Discard) {
		args = append(args, "--allow-discards")
	}
	for _, o := range l.OpenOptions {
		args = append(args, string(o))
	}
	return args
}

// crypttabLine is the /etc/crypttab entry ignite writes for a key-file
// LUKS volume, as upstream Ignition does.
func crypttabLine(name, uuid string) string {
	return fmt.Sprintf("%s UUID=%s %s/%s luks,x-initrd.attach", name, uuid, luksKeyDir, name)
}

// writeLuksFiles writes, for every LUKS volume of the config, its key file
// /etc/luks/<name> (0600; /etc/luks made 0700 when missing) and its
// /etc/crypttab line (appended unless present; the file 0600) into the
// target root. The keys come from Disks in this process; without them a
// keyFile is fetched again, and a generated key is an error.
func writeLuksFiles(ctx context.Context, env *Env, s types.Storage) error {
	if len(s.Luks) == 0 {
		return nil
	}
	if env.Planning() {
		for _, l := range s.Luks {
			env.Record("mount", "write", luksKeyDir+"/"+l.Name, "key file of luks "+l.Name+" (0600)")
		}
		env.Record("mount", "append", "/etc/crypttab", fmt.Sprintf("%d luks entries", len(s.Luks)))
		return nil
	}
	made := takeLuks(env)
	if made == nil {
		made = map[string]luksVolume{}
	}
	defer func() {
		for _, v := range made {
			clear(v.key)
		}
	}()
	var lines []string
	keys := map[string][]byte{}
	for _, l := range s.Luks {
		op := "writing the key file of luks " + l.Name
		v, ok := made[l.Name]
		if !ok {
			if cutil.NilOrEmpty(l.KeyFile.Source) || env.Fetch == nil || cutil.NilOrEmpty(l.Device) {
				return Failf(op, "the disks stage did not open luks %s in this process, and its key is not in the config", l.Name)
			}
			key, err := env.Fetch.Fetch(ctx, l.KeyFile)
			if err != nil {
				return Fail(op, fmt.Errorf("fetching keyFile: %w", err))
			}
			dev, err := resolveDevice(ctx, env, *l.Device)
			if err != nil {
				return Fail(op, err)
			}
			out, err := env.Command(ctx, nil, "cryptsetup", "luksUUID", dev)
			if err != nil {
				return Fail(op, err)
			}
			v = luksVolume{uuid: strings.TrimSpace(string(out)), key: key}
			made[l.Name] = v
		}
		keys[l.Name] = v.key
		lines = append(lines, crypttabLine(l.Name, v.uuid))
	}
	root, err := os.OpenRoot(env.Root)
	if err != nil {
		return Fail("writing LUKS key files", err)
	}
	defer root.Close()
	if err := root.MkdirAll("etc", 0o755); err != nil {
		return Fail("writing LUKS key files", err)
	}
	keyDir := strings.TrimPrefix(luksKeyDir, "/")
	if err := root.Mkdir(keyDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return Fail("writing LUKS key files", err)
	}
	for _, l := range s.Luks {
		p := keyDir + "/" + l.Name
		if err := writeLuksFile(root, p, keys[l.Name], 0o600); err != nil {
			return Fail("writing "+luksKeyDir+"/"+l.Name, err)
		}
	}
	old, err := root.ReadFile("etc/crypttab")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Fail("writing /etc/crypttab", err)
	}
	buf := bytes.Clone(old)
	if len(buf) > 0 && buf[len(buf)-1] != '\n' {
		buf = append(buf, '\n')
	}
	have := strings.Split(string(old), "\n")
	for _, line := range lines {
		if !slices.Contains(have, line) {
			buf = append(buf, line+"\n"...)
		}
	}
	if err := writeLuksFile(root, "etc/crypttab", buf, 0o600); err != nil {
		return Fail("writing /etc/crypttab", err)
	}
	env.Logger().Info("wrote LUKS key files and crypttab", "volumes", len(lines))
	return nil
}

// writeLuksFile replaces name (relative to root) atomically with data and
// mode, through a temporary file in the same directory; a symlink at name
// is replaced, never followed.
func writeLuksFile(root *os.Root, name string, data []byte, mode os.FileMode) error {
	tmp := name + ".ignite-tmp"
	root.Remove(tmp) // left by a crash, if any
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(mode)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = root.Rename(tmp, name)
	}
	if werr != nil {
		root.Remove(tmp)
	}
	return werr
}
