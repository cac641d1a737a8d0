package config_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/google/go-cmp/cmp"

	"github.com/kindlingboot/kindling/ignition/config"
)

func TestParseVersions(t *testing.T) {
	tests := []struct {
		version string
		body    string   // the rest of the config, after "ignition"
		want    []string // substrings of the parsed config's dump
	}{
		{"3.0.0", `"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAA"]}]},
			"storage":{"files":[{"path":"/etc/hostname","contents":{"source":"data:,node1"},"mode":420}]}`,
			[]string{"core", "/etc/hostname", "data:,node1"}},
		{"3.1.0", `"ignition":{"version":"3.1.0","proxy":{"httpProxy":"http://proxy:3128","noProxy":["10.0.0.0/8"]}},
			"storage":{"files":[{"path":"/a","contents":{"source":"http://example.com/a","httpHeaders":[{"name":"X-A","value":"1"}],
			"verification":{"hash":"sha256-2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}}}]}`,
			[]string{"http://proxy:3128", "X-A", "sha256-2cf24dba"}},
		{"3.2.0", `"storage":{"disks":[{"device":"/dev/vda","partitions":[{"number":1,"label":"root","resize":true}]}],
			"luks":[{"name":"data","device":"/dev/vdb","keyFile":{"source":"data:,k"}}]}`,
			[]string{`"resize":true`, `"name":"data"`, "/dev/vdb"}},
		{"3.3.0", `"kernelArguments":{"shouldExist":["console=ttyS0"],"shouldNotExist":["quiet"]}`,
			[]string{"console=ttyS0", "quiet"}},
		{"3.4.0", `"storage":{"luks":[{"name":"data","device":"/dev/vdb","discard":true,"openOptions":["--perf-no_read_workqueue"]}]}`,
			[]string{"--perf-no_read_workqueue", `"discard":true`}},
		{"3.5.0", `"storage":{"luks":[{"name":"data","device":"/dev/dasdb","cex":{"enabled":true}}]}`,
			[]string{`"cex":{"enabled":true}`}},
		{"3.6.0", `"storage":{"files":[{"path":"/usr/local/bin/suid","mode":2541}]}`,
			[]string{`"mode":2541`}},
	}
	for _, tc := range tests {
		t.Run(tc.version, func(t *testing.T) {
			in := tc.body
			if !strings.HasPrefix(in, `"ignition"`) {
				in = `"ignition":{"version":"` + tc.version + `"},` + in
			}
			in = "{" + in + "}"
			cfg, problems, err := config.Parse([]byte(in))
			if err != nil {
				t.Fatalf("Parse(%s config) error: %v", tc.version, err)
			}
			if len(problems) != 0 {
				t.Errorf("Parse(%s config) problems = %v, want none", tc.version, problems)
			}
			if cfg.Ignition.Version != "3.6.0" {
				t.Errorf("Parse(%s config).Ignition.Version = %q, want 3.6.0 (translated)", tc.version, cfg.Ignition.Version)
			}
			dump := dumpConfig(cfg)
			for _, w := range tc.want {
				if !strings.Contains(dump, w) {
					t.Errorf("Parse(%s config) = %s\nwant it to contain %q", tc.version, dump, w)
				}
			}
		})
	}
}

func TestParseSpecialModeBits(t *testing.T) {
	// Before 3.6.0 the setuid/setgid/sticky bits are masked off, with a
	// warning; from 3.6.0 they are kept.
	for _, tc := range []struct {
		version  string
		wantMode int
		warn     bool
	}{
		{"3.0.0", 0o755, true},
		{"3.5.0", 0o755, true},
		{"3.6.0", 0o4755, false},
	} {
		in := `{"ignition":{"version":"` + tc.version + `"},
"storage":{"files":[{"path":"/usr/bin/x","mode":2541}]}}`
		cfg, problems, err := config.Parse([]byte(in))
		if err != nil {
			t.Fatalf("Parse(%s mode 04755) error: %v", tc.version, err)
		}
		if got := *cfg.Storage.Files[0].Mode; got != tc.wantMode {
			t.Errorf("Parse(%s mode 04755) mode = %#o, want %#o", tc.version, got, tc.wantMode)
		}
		if got := len(problems) == 1; got != tc.warn {
			t.Fatalf("Parse(%s mode 04755) problems = %v, want a warning: %v", tc.version, problems, tc.warn)
		}
		if tc.warn {
			want := config.Problem{Severity: "warning", Path: "$.storage.files.0.mode", Line: 2, Column: 49,
				Message: "setuid/setgid/sticky bits are not supported or functional in spec versions older than 3.6.0"}
			if diff := cmp.Diff(want, problems[0]); diff != "" {
				t.Errorf("Parse(%s mode 04755) warning (-want +got):\n%s", tc.version, diff)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // the whole error text
	}{
		{"empty", "", "invalid config: empty input (want an Ignition config, spec 3.0.0 through 3.6.0)"},
		{"blank", " \n\t", "invalid config: empty input (want an Ignition config, spec 3.0.0 through 3.6.0)"},
		{"array", "[]", "invalid config at line 1 col 1: not a JSON object (want an Ignition config, spec 3.0.0 through 3.6.0)"},
		{"spec 2", `{"ignition":{"version":"2.2.0"}}`,
			`invalid config at $.ignition.version, line 1 col 24: unsupported config version "2.2.0": spec 1.x and 2.x configs must be translated to 3.x (want 3.0.0 through 3.6.0)`},
		{"experimental", `{"ignition":{"version":"3.7.0-experimental"}}`,
			`invalid config at $.ignition.version, line 1 col 24: unsupported config version "3.7.0-experimental" (want 3.0.0 through 3.6.0)`},
		{"not semver", `{"ignition":{"version":"three"}}`,
			`invalid config at $.ignition.version, line 1 col 24: unsupported config version "three" (want 3.0.0 through 3.6.0)`},
		{"no version", `{"ignition":{}}`,
			`invalid config at $.ignition, line 1 col 2: ignition.version is missing (want 3.0.0 through 3.6.0)`},
		{"no ignition", `{"storage":{}}`,
			`invalid config at $.ignition: ignition.version is missing (want 3.0.0 through 3.6.0)`},
		{"trailing comma", "{\"ignition\":\n {\"version\":\"3.6.0\"},}",
			`invalid config at line 2 col 22: not valid JSON: invalid character '}' looking for beginning of object key string`},
		{"truncated", "{\"ignition\":\n {\"version\":\"3.6.0\"}",
			`invalid config at line 2 col 20: not valid JSON: unexpected end of JSON input`},
		{"octal-looking mode as string", "{\"ignition\":{\"version\":\"3.6.0\"},\n\"storage\":{\"files\":[{\"path\":\"/a\",\"mode\":\"0644\"}]}}",
			`invalid config at line 2 col 41: storage.files.mode: got a JSON string, want an integer`},
		{"version as number", `{"ignition":{"version":3}}`,
			`invalid config at line 1 col 24: ignition.version: got a JSON number, want a string`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := config.Parse([]byte(tc.in))
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want %q", tc.in, tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("Parse(%q) error\n got %q\nwant %q", tc.in, err, tc.want)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("Parse(%q) error is not config.ErrInvalid", tc.in)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("Parse(%q) error spans lines, want one: %q", tc.in, err)
			}
		})
	}
}

// invalidConfig has three errors and one warning.
const invalidConfig = `{
  "ignition": {"version": "3.4.0"},
  "storage": {
    "files": [
      {"path": "etc/motd", "overwrite": true, "filesystem": "root"}
    ],
    "filesystems": [
      {"device": "/dev/vda1", "format": "ext4", "label": "a-label-longer-than-16"}
    ]
  }
}`

var invalidProblems = []config.Problem{
	{Severity: "error", Path: "$.storage.files.0.path", Line: 5, Column: 16, Message: "path not absolute"},
	{Severity: "error", Path: "$.storage.files.0.overwrite", Line: 5, Column: 41, Message: "overwrite must be false if source is unspecified"},
	{Severity: "error", Path: "$.storage.filesystems.0.label", Line: 8, Column: 58, Message: "filesystem labels cannot be longer than 16 characters when using ext4"},
	{Severity: "warning", Path: "$.storage.files.0.filesystem", Line: 5, Column: 47, Message: "unused key filesystem"},
}

func TestParseListsEveryProblem(t *testing.T) {
	_, warnings, err := config.Parse([]byte(invalidConfig))
	if err == nil {
		t.Fatal("Parse(invalid config) succeeded")
	}
	want := "invalid config: 3 errors:\n" +
		"  error at $.storage.files.0.path, line 5 col 16: path not absolute\n" +
		"  error at $.storage.files.0.overwrite, line 5 col 41: overwrite must be false if source is unspecified\n" +
		"  error at $.storage.filesystems.0.label, line 8 col 58: filesystem labels cannot be longer than 16 characters when using ext4"
	if err.Error() != want {
		t.Errorf("Parse(invalid config) error\n got %q\nwant %q", err, want)
	}
	if diff := cmp.Diff(invalidProblems[3:], warnings); diff != "" {
		t.Errorf("Parse(invalid config) warnings (-want +got):\n%s", diff)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []config.Problem
	}{
		{"valid", `{"ignition":{"version":"3.6.0"}}`, nil},
		{"invalid", invalidConfig, invalidProblems},
		{"warnings only", `{"ignition":{"version":"3.6.0"},
"systemd":{"units":[{"name":"x.service","enabled":true,"contents":"[Service]\nExecStart=/bin/true\n"}]},
"storage":{"links":[{"path":"/a","target":"/b","hard":true,"user":{"id":1}}]}}`, []config.Problem{
			{Severity: "warning", Path: "$.storage.links.0.user.id", Line: 3, Column: 73, Message: "user/group ignored for hard link"},
			{Severity: "warning", Path: "$.systemd.units.0.contents", Line: 2, Column: 67, Message: "unit \"x.service\" is enabled, but has no install section so enable does nothing"},
		}},
		{"duplicate", `{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/a"}],"directories":[{"path":"/a"}]}}`, []config.Problem{
			{Severity: "error", Path: "$.storage.files.0", Line: 1, Column: 54, Message: "duplicate entry defined"},
		}},
		{"bad source scheme", `{"ignition":{"version":"3.6.0","config":{"replace":{"source":"ftp://x/y"}}}}`, []config.Problem{
			{Severity: "error", Path: "$.ignition.config.replace.source", Line: 1, Column: 62, Message: "invalid url scheme"},
		}},
		{"spec 2", `{"ignition":{"version":"2.3.0"}}`, []config.Problem{
			{Severity: "error", Path: "$.ignition.version", Line: 1, Column: 24, Message: `unsupported config version "2.3.0": spec 1.x and 2.x configs must be translated to 3.x (want 3.0.0 through 3.6.0)`},
		}},
		{"empty", ``, []config.Problem{
			{Severity: "error", Path: "$", Message: "empty input (want an Ignition config, spec 3.0.0 through 3.6.0)"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := config.Validate([]byte(tc.in))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Validate(%s) (-want +got):\n%s", tc.name, diff)
			}
		})
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    config.Problem
		want string
	}{
		{config.Problem{Severity: "error", Path: "$.storage.files.0.path", Line: 5, Column: 12, Message: "path not absolute"},
			"error at $.storage.files.0.path, line 5 col 12: path not absolute"},
		{config.Problem{Severity: "warning", Path: "$.a", Message: "m"}, "warning at $.a: m"},
		{config.Problem{Severity: "error", Path: "$", Line: 2, Column: 3, Message: "m"}, "error at line 2 col 3: m"},
		{config.Problem{Severity: "error", Path: "$", Message: "empty input"}, "error: empty input"},
	}
	for _, tc := range tests {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.p, got, tc.want)
		}
	}
}

// dumpConfig renders a config as JSON for substring checks.
func dumpConfig(cfg types.Config) string {
	b, err := json.Marshal(cfg)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
