package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/kindlingboot/kindling/ignition/fetch"
)

func TestCheckSources(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		want      []string // substrings of the error; none: no error
	}{
		{"fetchable", `{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/a","contents":{"source":"https://h/a"},"append":[{"source":"tftp://h/b"},{"source":"data:,c"}]},{"path":"/empty"}]}}`, nil},
		{"s3 contents", `{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/a"},{"path":"/b","contents":{"source":"s3://bucket/b"}}]}}`,
			[]string{`unsupported URL scheme "s3" in storage.files[1].contents.source "s3://bucket/b"`}},
		{"gs append and arn key file", `{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/a","append":[{"source":"data:,x"},{"source":"gs://b/o"}]}],"luks":[{"name":"l","device":"/dev/vdb","keyFile":{"source":"arn:aws:s3:::b/k"}}]}}`,
			[]string{`"gs" in storage.files[0].append[1].source`, `"arn" in storage.luks[0].keyFile.source`}},
	} {
		cfg, _, err := Parse([]byte(tc.cfg))
		if err != nil {
			t.Fatalf("%s: Parse: %v", tc.name, err)
		}
		err = CheckSources(cfg)
		if len(tc.want) == 0 {
			if err != nil {
				t.Errorf("%s: CheckSources = %v, want nil", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, fetch.ErrUnsupportedScheme) {
			t.Errorf("%s: CheckSources = %v, want ErrUnsupportedScheme", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: CheckSources = %q, want it to contain %q", tc.name, err, w)
			}
		}
	}
}
