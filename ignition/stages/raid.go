package stages

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/coreos/ignition/v2/config/v3_6/types"
)

// raidLevels are the levels the config accepts; noSpares, those that
// cannot have spares.
var (
	raidLevels = map[string]bool{"linear": true, "raid0": true, "0": true, "stripe": true, "raid1": true, "1": true,
		"mirror": true, "raid4": true, "4": true, "raid5": true, "5": true, "raid6": true, "6": true, "raid10": true, "10": true}
	noSpares = map[string]bool{"linear": true, "raid0": true, "0": true, "stripe": true}
)

// raidDevice returns the device path of an array: /dev/md/<name>, or the
// name itself when it is already a /dev path.
func raidDevice(name string) string {
	if strings.HasPrefix(name, "/dev") {
		return name
	}
	return "/dev/md/" + name
}

// createRaid creates an md array with mdadm. As with upstream Ignition,
// the array is always created, never reused: mdadm --create --force --run
// --homehost any, with the config's options before the member devices.
func (r *diskRun) createRaid(ctx context.Context, md types.Raid) error {
	op := "creating raid " + md.Name
	level := ""
	if md.Level != nil {
		level = *md.Level
	}
	spares := 0
	if md.Spares != nil {
		spares = *md.Spares
	}
	switch {
	case level == "":
		return Failf(op, "level is required (valid: linear, raid0, raid1, raid4, raid5, raid6, raid10)")
	case !raidLevels[level]:
		return Failf(op, "level %q is not valid (valid: linear, raid0/0/stripe, raid1/1/mirror, raid4/4, raid5/5, raid6/6, raid10/10)", level)
	case len(md.Devices) == 0:
		return Failf(op, "devices is required")
	case spares < 0:
		return Failf(op, "spares %d is negative", spares)
	case spares > 0 && noSpares[level]:
		return Failf(op, "level %s cannot have spares (spares is %d)", level, spares)
	case spares >= len(md.Devices):
		return Failf(op, "spares %d leaves no active device among %d devices", spares, len(md.Devices))
	}
	var devs []string
	for _, d := range md.Devices {
		ref, err := r.device(ctx, string(d))
		if err != nil {
			return Fail(op, err)
		}
		if ref.Planned != "" && ref.Path == "" {
			devs = append(devs, string(d))
			continue
		}
		if ref.Size > 0 {
			devs = append(devs, string(d))
			continue
		}
		if why := blockUse(ref.Path); why != "" {
			return Failf(op, "member %s (%s) is %s", d, ref.Path, why)
		}
		devs = append(devs, ref.Path)
	}
	dev := raidDevice(md.Name)
	r.env.Record("raid", "create", dev, fmt.Sprintf("level %s over %s (%d active, %d spare); an array is always created anew",
		level, strings.Join(devs, " "), len(md.Devices)-spares, spares))
	if r.env.Planning() {
		r.plan(blockRef{Planned: "array " + md.Name + ", created by this config"}, dev)
		return nil
	}
	args := []string{"--create", md.Name, "--force", "--run", "--homehost", "any",
		"--level", level, "--raid-devices", strconv.Itoa(len(md.Devices) - spares)}
	if spares > 0 {
		args = append(args, "--spare-devices", strconv.Itoa(spares))
	}
	for _, o := range md.Options {
		args = append(args, string(o))
	}
	args = append(args, devs...)
	r.env.Logger().Info("creating raid", "name", md.Name, "level", level, "devices", len(devs))
	if _, err := r.env.Command(ctx, nil, "mdadm", args...); err != nil {
		return Fail(op, err)
	}
	if _, err := r.device(ctx, dev); err != nil {
		return Fail(op, fmt.Errorf("the array did not appear: %w", err))
	}
	return nil
}
