package config

import (
	"errors"
	"fmt"

	"github.com/coreos/ignition/v2/config/v3_6/types"

	"github.com/kindlingboot/kindling/ignition/fetch"
)

// CheckSources checks, before any stage runs, that every resource the
// stages will fetch (file contents and appends, LUKS key files) has a
// source Kindling can fetch, so a config that cannot succeed fails before
// a disk is touched. Each problem names the resource's JSON path.
func CheckSources(cfg types.Config) error {
	var errs []error
	check := func(path string, src *string) {
		if src == nil || *src == "" {
			return
		}
		if err := fetch.CheckSource(path, *src); err != nil {
			errs = append(errs, err)
		}
	}
	for i, f := range cfg.Storage.Files {
		check(fmt.Sprintf("storage.files[%d].contents.source", i), f.Contents.Source)
		for j, a := range f.Append {
			check(fmt.Sprintf("storage.files[%d].append[%d].source", i, j), a.Source)
		}
	}
	for i, l := range cfg.Storage.Luks {
		check(fmt.Sprintf("storage.luks[%d].keyFile.source", i), l.KeyFile.Source)
	}
	return errors.Join(errs...)
}
