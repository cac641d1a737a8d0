package stages

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestSystemdUnits(t *testing.T) {
	ftNeedRoot(t)
	const (
		usr    = "usr/lib/systemd/system/"
		etc    = "etc/systemd/system/"
		preset = "etc/systemd/system-preset/20-ignition.preset"
	)
	unit := func(install string) string {
		return "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\n" + install
	}
	tests := []struct {
		name  string
		setup []ftNode
		cfg   string
		want  []ftWant
	}{{
		name: "contents and enabled: unit file, preset line, .wants link",
		cfg:  `"systemd":{"units":[{"name":"app.service","enabled":true,"contents":"[Service]\nExecStart=/bin/app\n[Install]\nWantedBy=multi-user.target\n"}]}`,
		want: []ftWant{
			{path: etc + "app.service", kind: 'f', mode: 0o644, data: "[Service]\nExecStart=/bin/app\n[Install]\nWantedBy=multi-user.target\n"},
			{path: preset, kind: 'f', mode: 0o644, data: "enable app.service\n"},
			{path: etc + "multi-user.target.wants", kind: 'd', mode: 0o755},
			{path: etc + "multi-user.target.wants/app.service", kind: 'l', target: "/etc/systemd/system/app.service"},
		},
	}, {
		name:  "drop-ins: empty contents written, none skipped; no unit without contents",
		setup: []ftNode{{path: etc + "x.service.d/10-old.conf", data: "old"}},
		cfg: `"systemd":{"units":[{"name":"x.service","dropins":[{"name":"a.conf","contents":""},{"name":"b.conf"},
			{"name":"10-old.conf","contents":"[Service]\nNice=5\n"}]}]}`,
		want: []ftWant{
			{path: etc + "x.service.d/a.conf", kind: 'f', mode: 0o644, data: ""},
			{path: etc + "x.service.d/b.conf", kind: '-'},
			{path: etc + "x.service.d/10-old.conf", kind: 'f', mode: 0o644, data: "[Service]\nNice=5\n"},
			{path: etc + "x.service", kind: '-'},
			{path: preset, kind: '-'},
		},
	}, {
		name:  "mask and unmask",
		setup: []ftNode{{path: etc + "old.service", link: "/dev/null"}, {path: etc + "file.service", data: unit("")}, {path: etc + "other.service", link: "/elsewhere"}},
		cfg: `"systemd":{"units":[{"name":"old.service","mask":false},{"name":"new.service","mask":true},
			{"name":"file.service","mask":true},{"name":"other.service","mask":false}]}`,
		want: []ftWant{
			{path: etc + "old.service", kind: '-'},
			{path: etc + "new.service", kind: 'l', target: "/dev/null"},
			{path: etc + "file.service", kind: 'l', target: "/dev/null"},
			{path: etc + "other.service", kind: 'l', target: "/elsewhere"},
		},
	}, {
		name: "enable from /usr/lib and /lib: RequiredBy, UpheldBy, Alias, Also",
		setup: []ftNode{
			{path: usr + "foo.service", data: unit("[Install]\nWantedBy=multi-user.target graphical.target\nRequiredBy=x.target\nUpheldBy=y.target\nAlias=bar.service\nAlso=foo.socket\n")},
			{path: "lib/systemd/system/foo.socket", data: "[Socket]\nListenStream=1\n[Install]\nWantedBy=sockets.target\n"},
		},
		cfg: `"systemd":{"units":[{"name":"foo.service","enabled":true}]}`,
		want: []ftWant{
			{path: preset, kind: 'f', data: "enable foo.service\n"},
			{path: etc + "multi-user.target.wants/foo.service", kind: 'l', target: "/usr/lib/systemd/system/foo.service"},
			{path: etc + "graphical.target.wants/foo.service", kind: 'l', target: "/usr/lib/systemd/system/foo.service"},
			{path: etc + "x.target.requires/foo.service", kind: 'l', target: "/usr/lib/systemd/system/foo.service"},
			{path: etc + "y.target.upholds/foo.service", kind: 'l', target: "/usr/lib/systemd/system/foo.service"},
			{path: etc + "bar.service", kind: 'l', target: "/usr/lib/systemd/system/foo.service"},
			{path: etc + "sockets.target.wants/foo.socket", kind: 'l', target: "/lib/systemd/system/foo.socket"},
		},
	}, {
		name:  "instances of a template: one preset line, links to the template",
		setup: []ftNode{{path: usr + "getty@.service", data: unit("[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n")}},
		cfg:   `"systemd":{"units":[{"name":"getty@tty2.service","enabled":true},{"name":"getty@tty3.service","enabled":true}]}`,
		want: []ftWant{
			{path: preset, kind: 'f', data: "enable getty@.service tty2 tty3\n"},
			{path: etc + "getty.target.wants/getty@tty2.service", kind: 'l', target: "/usr/lib/systemd/system/getty@.service"},
			{path: etc + "getty.target.wants/getty@tty3.service", kind: 'l', target: "/usr/lib/systemd/system/getty@.service"},
			{path: etc + "getty.target.wants/getty@tty1.service", kind: '-'},
		},
	}, {
		name:  "a template enabled by its own name gets its DefaultInstance",
		setup: []ftNode{{path: usr + "getty@.service", data: unit("[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n")}},
		cfg:   `"systemd":{"units":[{"name":"getty@.service","enabled":true}]}`,
		want: []ftWant{
			// Upstream's line for an instance list that is empty, byte for byte.
			{path: preset, kind: 'f', data: "enable getty@.service \n"},
			{path: etc + "getty.target.wants/getty@tty1.service", kind: 'l', target: "/usr/lib/systemd/system/getty@.service"},
		},
	}, {
		name:  "specifiers and continuation lines in [Install]",
		setup: []ftNode{{path: usr + "svc-db@.service", data: unit("[Install]\n# comment\nWantedBy=%p.target \\\n  extra-%i.target\nAlias=%N-alias.service\nRequiredBy=%j.target\n")}},
		cfg:   `"systemd":{"units":[{"name":"svc-db@main.service","enabled":true}]}`,
		want: []ftWant{
			{path: etc + "svc-db.target.wants/svc-db@main.service", kind: 'l', target: "/usr/lib/systemd/system/svc-db@.service"},
			{path: etc + "extra-main.target.wants/svc-db@main.service", kind: 'l', target: "/usr/lib/systemd/system/svc-db@.service"},
			{path: etc + "svc-db@main-alias.service", kind: 'l', target: "/usr/lib/systemd/system/svc-db@.service"},
			{path: etc + "db.target.requires/svc-db@main.service", kind: 'l', target: "/usr/lib/systemd/system/svc-db@.service"},
		},
	}, {
		name: "disabling an enabled unit removes its links and writes disable",
		setup: []ftNode{
			{path: usr + "old.service", data: unit("[Install]\nWantedBy=multi-user.target\nAlias=oldalias.service\n")},
			{path: etc + "multi-user.target.wants/old.service", link: "/usr/lib/systemd/system/old.service"},
			{path: etc + "default.target.wants/old.service", link: "/lib/systemd/system/old.service"},
			{path: etc + "oldalias.service", link: "/usr/lib/systemd/system/old.service"},
			{path: etc + "multi-user.target.wants/keep.service", link: "/usr/lib/systemd/system/keep.service"},
			{path: usr + "getty@.service", data: unit("[Install]\nWantedBy=getty.target\n")},
			{path: etc + "getty.target.wants/getty@tty5.service", link: "/usr/lib/systemd/system/getty@.service"},
			{path: etc + "getty.target.wants/getty@tty6.service", link: "/usr/lib/systemd/system/getty@.service"},
		},
		cfg: `"systemd":{"units":[{"name":"old.service","enabled":false},{"name":"getty@tty5.service","enabled":false}]}`,
		want: []ftWant{
			{path: etc + "multi-user.target.wants/old.service", kind: '-'},
			{path: etc + "default.target.wants/old.service", kind: '-'},
			{path: etc + "oldalias.service", kind: '-'},
			{path: etc + "multi-user.target.wants/keep.service", kind: 'l', target: "/usr/lib/systemd/system/keep.service"},
			{path: etc + "getty.target.wants/getty@tty5.service", kind: '-'},
			{path: etc + "getty.target.wants/getty@tty6.service", kind: 'l', target: "/usr/lib/systemd/system/getty@.service"},
			// Upstream never writes a disable line for an instance.
			{path: preset, kind: 'f', data: "disable old.service\n"},
		},
	}, {
		name: "disabling: a disabled or missing unit changes nothing, a static one gets its line",
		setup: []ftNode{
			{path: usr + "off.service", data: unit("[Install]\nWantedBy=multi-user.target\n")},
			{path: usr + "static.service", data: unit("")},
		},
		cfg: `"systemd":{"units":[{"name":"off.service","enabled":false},{"name":"missing.service","enabled":false},{"name":"static.service","enabled":false}]}`,
		want: []ftWant{
			{path: preset, kind: 'f', data: "disable static.service\n"},
		},
	}, {
		name: "preset lines sorted and appended to an existing file, keeping its mode",
		setup: []ftNode{
			{path: preset, data: "enable first.service\n", mode: 0o600},
			{path: usr + "b.service", data: unit("")},
		},
		cfg: `"systemd":{"units":[{"name":"c.service","enabled":true,"contents":"[Service]\nExecStart=/bin/c\n"},{"name":"b.service","enabled":true}]}`,
		want: []ftWant{
			{path: preset, kind: 'f', mode: 0o600, data: "enable first.service\nenable b.service\nenable c.service\n"},
			{path: etc + "multi-user.target.wants", kind: '-'},
		},
	}, {
		name: "masked units get the preset line and no links",
		setup: []ftNode{
			{path: usr + "m.service", data: unit("[Install]\nWantedBy=multi-user.target\n")},
			{path: etc + "m.service", link: "/dev/null"},
			{path: usr + "n.service", data: unit("[Install]\nWantedBy=multi-user.target\n")},
		},
		cfg: `"systemd":{"units":[{"name":"m.service","enabled":true},{"name":"n.service","enabled":true,"mask":true}]}`,
		want: []ftWant{
			{path: preset, kind: 'f', data: "enable m.service\nenable n.service\n"},
			{path: etc + "n.service", kind: 'l', target: "/dev/null"},
			{path: etc + "multi-user.target.wants", kind: '-'},
		},
	}, {
		name: "a stale .wants link is replaced; an alias owned by another unit is kept",
		setup: []ftNode{
			{path: usr + "foo.service", data: unit("[Install]\nWantedBy=multi-user.target\nAlias=display-manager.service\n")},
			{path: etc + "multi-user.target.wants/foo.service", link: "/opt/old/foo.service"},
			{path: etc + "display-manager.service", link: "/usr/lib/systemd/system/gdm.service"},
		},
		cfg: `"systemd":{"units":[{"name":"foo.service","enabled":true}]}`,
		want: []ftWant{
			{path: etc + "multi-user.target.wants/foo.service", kind: 'l', target: "/usr/lib/systemd/system/foo.service"},
			{path: etc + "display-manager.service", kind: 'l', target: "/usr/lib/systemd/system/gdm.service"},
		},
	}, {
		name:  "a unit written by storage.files can be enabled",
		setup: []ftNode{{path: "lib", link: "usr/lib"}, {path: "usr/lib", dir: true}},
		cfg: `"storage":{"files":[{"path":"/etc/systemd/system/f.service","contents":{"source":"http://h/unit"}}]},
			"systemd":{"units":[{"name":"f.service","enabled":true}]}`,
		want: []ftWant{
			{path: etc + "f.service", kind: 'f', data: "[Service]\nExecStart=/bin/f\n[Install]\nWantedBy=default.target\n"},
			{path: etc + "default.target.wants/f.service", kind: 'l', target: "/etc/systemd/system/f.service"},
		},
	}}
	fetch := ftFetch{"http://h/unit": "[Service]\nExecStart=/bin/f\n[Install]\nWantedBy=default.target\n"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			ftMake(t, root, tc.setup...)
			if err := Files(context.Background(), ftEnv(root, fetch, nil), ftConfig(t, tc.cfg)); err != nil {
				t.Fatalf("Files() = %v", err)
			}
			ftCheck(t, root, tc.want)
		})
	}
}

func TestParseInstall(t *testing.T) {
	in := parseInstall([]byte(`[Unit]
WantedBy=not-this.target
[Install]
WantedBy=a.target b.target
; comment
WantedBy=c.target
Alias=x.service
Alias=
Alias=y.service
Also=z.socket \
  w.socket
DefaultInstance=tty1
[Service]
Also=no.service
`))
	want := unitInstall{wantedBy: []string{"a.target", "b.target", "c.target"}, alias: []string{"y.service"}, also: []string{"z.socket", "w.socket"}, defaultInstance: "tty1"}
	if in.defaultInstance != want.defaultInstance || !slices.Equal(in.wantedBy, want.wantedBy) ||
		!slices.Equal(in.alias, want.alias) || !slices.Equal(in.also, want.also) || len(in.requiredBy) != 0 {
		t.Errorf("parseInstall() = %+v, want %+v", in, want)
	}
}

func TestExpandSpecifiers(t *testing.T) {
	tests := []struct{ in, name, want, wantErr string }{
		{"%n", "getty@tty1.service", "getty@tty1.service", ""},
		{"%N.x", "getty@tty1.service", "getty@tty1.x", ""},
		{"%p-%i", "getty@tty1.service", "getty-tty1", ""},
		{"%j", "system-getty@tty1.service", "getty", ""},
		{"%p", "plain.service", "plain", ""},
		{"100%%", "a.service", "100%", ""},
		{"%H", "a.service", "", "specifier %H"},
		{"x%", "a.service", "", "lone %"},
	}
	for _, tc := range tests {
		got, err := expandSpecifiers(tc.in, tc.name)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("expandSpecifiers(%q, %q) = %q, %v, want error containing %q", tc.in, tc.name, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("expandSpecifiers(%q, %q) = %q, %v, want %q", tc.in, tc.name, got, err, tc.want)
		}
	}
}
