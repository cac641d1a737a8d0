package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"

	cutil "github.com/coreos/ignition/v2/config/util"
	"github.com/coreos/ignition/v2/config/v3_6/types"
)

// fsInfo is what a device holds, as blkid's superblock probe reports it;
// Type "" means no filesystem (nor RAID member, LUKS header, swap, …).
type fsInfo struct {
	Type, UUID, Label string
}

func (i fsInfo) String() string {
	if i.Type == "" {
		return "no filesystem"
	}
	s := i.Type
	if i.Label != "" {
		s += fmt.Sprintf(" labelled %q", i.Label)
	}
	if i.UUID != "" {
		s += " with uuid " + i.UUID
	}
	return s
}

// partitionTableTypes are the signatures wipefs lists that are partition
// tables, not contents.
var partitionTableTypes = map[string]bool{"gpt": true, "PMBR": true, "dos": true, "atari": true, "bsd": true,
	"mac": true, "sgi": true, "sun": true, "solaris": true, "unixware": true, "minix": true, "aix": true, "ultrix": true}

// probeFS reports what ref holds, with `blkid -p` (superblocks only,
// bypassing the cache). When blkid finds two conflicting signatures, the
// first one wipefs lists is taken, with a warning, as upstream Ignition
// then takes the first probe result.
func probeFS(ctx context.Context, env *Env, ref blockRef) (fsInfo, error) {
	if ref.Path == "" {
		return fsInfo{}, nil
	}
	args := []string{"-p", "-d", "-o", "export"}
	if ref.Size > 0 {
		args = append(args, "-O", strconv.FormatInt(ref.Offset, 10), "-S", strconv.FormatInt(ref.Size, 10))
	}
	out, err := env.Command(ctx, nil, "blkid", append(args, ref.Path)...)
	switch code := cmdExitCode(err); {
	case err == nil:
	case code == 2:
		return fsInfo{}, nil
	case code == 8 && ref.Size == 0:
		env.Logger().Warn("conflicting signatures; using the first", "device", ref.Path, "err", err)
		return firstSignature(ctx, env, ref.Path)
	default:
		return fsInfo{}, fmt.Errorf("probing %s: %w", ref.Path, err)
	}
	kv := parseBlkidExport(string(out))
	return fsInfo{Type: kv["TYPE"], UUID: kv["UUID"], Label: kv["LABEL"]}, nil
}

// firstSignature returns the first non-partition-table signature wipefs
// finds on dev.
func firstSignature(ctx context.Context, env *Env, dev string) (fsInfo, error) {
	out, err := env.Command(ctx, nil, "wipefs", "--no-act", "--json", "--output", "TYPE,UUID,LABEL", dev)
	if err != nil {
		return fsInfo{}, fmt.Errorf("listing signatures of %s: %w", dev, err)
	}
	var res struct {
		Signatures []struct {
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Label string `json:"label"`
		} `json:"signatures"`
	}
	if len(strings.TrimSpace(string(out))) == 0 {
		return fsInfo{}, nil
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return fsInfo{}, fmt.Errorf("reading wipefs output for %s: %w", dev, err)
	}
	for _, s := range res.Signatures {
		if !partitionTableTypes[s.Type] {
			return fsInfo{Type: s.Type, UUID: s.UUID, Label: s.Label}, nil
		}
	}
	return fsInfo{}, nil
}

// canonicalFSUUID makes equivalent filesystem UUIDs compare equal: lower
// case, and a FAT volume id without its dash (A1B2-C3D4 = a1b2c3d4).
func canonicalFSUUID(format, uuid string) string {
	uuid = strings.ToLower(uuid)
	if format == "vfat" && len(uuid) >= 5 && uuid[4] == '-' {
		uuid = uuid[:4] + uuid[5:]
	}
	return uuid
}

// createFilesystems makes (or reuses) every filesystem, concurrently up to
// GOMAXPROCS; in plan mode one after the other, so the plan keeps the
// config's order. All failures are reported.
func (r *diskRun) createFilesystems(ctx context.Context, fss []types.Filesystem) error {
	if len(fss) == 0 {
		return nil
	}
	errs := make([]error, len(fss))
	if r.env.Planning() {
		for i, fs := range fss {
			errs[i] = r.makeFilesystem(ctx, fs)
		}
	} else {
		sem := make(chan struct{}, runtime.GOMAXPROCS(0))
		var wg sync.WaitGroup
		for i, fs := range fss {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				errs[i] = r.makeFilesystem(ctx, fs)
			}()
		}
		wg.Wait()
	}
	var failed []error
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	switch len(failed) {
	case 0:
		return nil
	case 1:
		return failed[0]
	}
	return &OpError{Op: fmt.Sprintf("creating filesystems (%d failed)", len(failed)), Err: errors.Join(failed...)}
}

// makeFilesystem applies upstream Ignition's filesystem reuse rules to one
// filesystem: without wipeFilesystem, an existing filesystem of the same
// format (and the label and uuid given, if any) is kept, and anything else
// fails; otherwise (or on an empty device) the signatures are wiped and
// mkfs runs.
func (r *diskRun) makeFilesystem(ctx context.Context, fs types.Filesystem) error {
	if cutil.NilOrEmpty(fs.Format) {
		return nil
	}
	format := *fs.Format
	op := fmt.Sprintf("creating %s filesystem on %s", format, fs.Device)
	ref, err := r.device(ctx, fs.Device)
	if err != nil {
		return Fail(op, err)
	}
	info, err := probeFS(ctx, r.env, ref)
	if err != nil {
		return Fail(op, err)
	}
	want := describeWantedFS(fs)
	if !cutil.IsTrue(fs.WipeFilesystem) {
		if ref.Unknown {
			r.env.Record("filesystems", "check", fs.Device, fmt.Sprintf("reuse it if it holds %s, else fail (%s)", want, ref.Planned))
			return nil
		}
		wantType := format
		if wantType == "none" {
			wantType = ""
		}
		if info.Type == wantType &&
			(fs.Label == nil || info.Label == *fs.Label) &&
			(fs.UUID == nil || canonicalFSUUID(info.Type, info.UUID) == canonicalFSUUID(format, *fs.UUID)) {
			r.env.Record("filesystems", "reuse", fs.Device, "keep "+info.String())
			r.env.Logger().Info("reusing filesystem", "device", fs.Device, "found", info.String())
			return nil
		}
		if info.Type != "" {
			return Failf(op, "%s holds %s, the config wants %s, and wipeFilesystem is false; set wipeFilesystem to replace it", fs.Device, info, want)
		}
	}
	detail := want
	if info.Type != "" {
		detail += ", replacing " + info.String()
	}
	if ref.Planned != "" {
		detail += " (" + ref.Planned + ")"
	}
	if format == "none" {
		r.env.Record("filesystems", "wipe", fs.Device, "wipe all signatures (format none)")
	} else {
		r.env.Record("filesystems", "format", fs.Device, detail)
	}
	if r.env.Planning() {
		return nil
	}
	dev := ref.Path
	if _, err := r.env.Command(ctx, nil, "wipefs", "-a", dev); err != nil {
		return Fail(op, fmt.Errorf("wiping signatures: %w", err))
	}
	if format == "none" {
		settleUdev(ctx, r.env, dev)
		return nil
	}
	tool, args, err := mkfsCommand(fs)
	if err != nil {
		return Fail(op, err)
	}
	r.env.Logger().Info("making filesystem", "device", fs.Device, "format", format)
	if _, err := r.env.Command(ctx, nil, tool, append(args, dev)...); err != nil {
		return Fail(op, err)
	}
	settleUdev(ctx, r.env, dev)
	return nil
}

// mkfsCommand returns the tool and arguments (without the device) that
// make fs, as upstream Ignition runs them: the config's options first,
// then the force flag, uuid and label.
func mkfsCommand(fs types.Filesystem) (string, []string, error) {
	format := *fs.Format
	var args []string
	for _, o := range fs.Options {
		args = append(args, string(o))
	}
	var tool, uuidFlag, labelFlag string
	switch format {
	case "ext4":
		tool, uuidFlag, labelFlag = "mkfs.ext4", "-U", "-L"
		args = append(args, "-F")
	case "btrfs":
		tool, uuidFlag, labelFlag = "mkfs.btrfs", "-U", "-L"
		args = append(args, "--force")
	case "xfs":
		tool, uuidFlag, labelFlag = "mkfs.xfs", "-m", "-L"
		args = append(args, "-f")
	case "swap":
		tool, uuidFlag, labelFlag = "mkswap", "-U", "-L"
		args = append(args, "-f")
	case "vfat":
		// mkfs.fat has no force flag: it always overwrites.
		tool, uuidFlag, labelFlag = "mkfs.fat", "-i", "-n"
	default:
		return "", nil, fmt.Errorf("format %q is not supported (valid: ext4, btrfs, xfs, vfat, swap, none)", format)
	}
	if fs.UUID != nil {
		u := canonicalFSUUID(format, *fs.UUID)
		if format == "xfs" {
			u = "uuid=" + u
		}
		args = append(args, uuidFlag, u)
	}
	if fs.Label != nil {
		args = append(args, labelFlag, *fs.Label)
	}
	return tool, args, nil
}

// describeWantedFS describes the filesystem the config asks for.
func describeWantedFS(fs types.Filesystem) string {
	s := *fs.Format
	if *fs.Format == "none" {
		s = "no filesystem"
	}
	if fs.Label != nil {
		s += fmt.Sprintf(" labelled %q", *fs.Label)
	}
	if fs.UUID != nil {
		s += " with uuid " + *fs.UUID
	}
	return s
}
