package render

import (
	"errors"
	"fmt"
	"strings"

	"github.com/coreos/butane/config"
	"github.com/coreos/butane/config/common"
	errs "github.com/coreos/ignition/v2/config/shared/errors"
	ignutil "github.com/coreos/ignition/v2/config/util"
	"github.com/coreos/ignition/v2/config/v3_6"
	"github.com/coreos/ignition/v2/config/v3_7_experimental"
	"github.com/coreos/vcontext/report"
)

// CheckIgnition parses and validates an Ignition config with upstream
// Ignition's own validation. Stable specs 3.0–3.6 are accepted, and the
// 3.7.0-experimental spec that experimental Butane variants produce. It
// returns the config's spec version.
func CheckIgnition(raw []byte) (string, error) {
	ver, rpt, err := ignutil.GetConfigVersion(raw)
	if err != nil {
		return "", fmt.Errorf("%w: %v%s (want an Ignition config with ignition.version 3.0.0 to 3.6.0)", ErrConfig, err, reportSuffix(rpt))
	}
	if ver.PreRelease != "" {
		if ver.String() != "3.7.0-experimental" {
			return "", fmt.Errorf("%w: ignition.version %s is not supported (want 3.0.0 to 3.6.0, or 3.7.0-experimental)", ErrConfig, ver)
		}
		_, rpt, err = v3_7_experimental.Parse(raw)
	} else {
		_, rpt, err = v3_6.ParseCompatibleVersion(raw)
	}
	if err != nil {
		want := ""
		if errors.Is(err, errs.ErrUnknownVersion) || errors.Is(err, errs.ErrInvalidVersion) {
			want = " (want ignition.version 3.0.0 to 3.6.0; spec 2.x configs must be translated to 3.x)"
		}
		return "", fmt.Errorf("%w: ignition %s: %v%s%s", ErrConfig, ver, err, reportSuffix(rpt), want)
	}
	return ver.String(), nil
}

// ButaneOptions are the transpiler's knobs.
type ButaneOptions struct {
	// Strict makes Butane's warnings errors.
	Strict bool
	// FilesDir lets local: references embed files below it; empty forbids them.
	FilesDir string
	// Pretty indents the output.
	Pretty bool
}

// Butane transpiles Butane YAML (any variant and version Butane knows) to
// Ignition JSON and validates the result with CheckIgnition. Warnings are
// returned as text (empty when none); with Strict they are an error.
func Butane(src []byte, o ButaneOptions) (ign []byte, warnings string, err error) {
	out, rpt, err := config.TranslateBytes(src, common.TranslateBytesOptions{
		TranslateOptions: common.TranslateOptions{FilesDir: o.FilesDir},
		Pretty:           o.Pretty,
		Raw:              true, // Ignition even for variants that wrap it (openshift)
	})
	if err != nil {
		return nil, "", fmt.Errorf("%w: butane: %v%s", ErrConfig, err, reportSuffix(rpt))
	}
	if o.Strict && len(rpt.Entries) > 0 {
		return nil, "", fmt.Errorf("%w: butane (strict): %s", ErrConfig, strings.TrimSpace(rpt.String()))
	}
	if _, err := CheckIgnition(out); err != nil {
		return nil, "", fmt.Errorf("butane output: %w", err)
	}
	return out, strings.TrimSpace(rpt.String()), nil
}

func reportSuffix(r report.Report) string {
	s := strings.TrimSpace(r.String())
	if s == "" {
		return ""
	}
	return ": " + strings.ReplaceAll(s, "\n", "; ")
}
