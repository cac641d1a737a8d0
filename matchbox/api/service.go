package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/profiles"
)

// errUnchanged is returned by an edit that has nothing to write (deleting
// what does not exist): the write succeeds without touching anything.
var errUnchanged = errors.New("nothing to change")

// service is what both transports do, over the serving catalog.
type service struct {
	catalog func() *catalog.Catalog
	update  func(edit func(*catalog.Catalog) (catalog.Change, error)) (*catalog.Catalog, error)
}

// write runs edit under the server's writer lock and returns the catalog
// it produced (the serving one when there was nothing to change).
func (s *service) write(edit func(*catalog.Catalog) (catalog.Change, error)) (*catalog.Catalog, error) {
	c, err := s.update(edit)
	if errors.Is(err, errUnchanged) {
		return s.catalog(), nil
	}
	return c, err
}

func (s *service) groupList() []*groups.Group { return s.catalog().Groups() }

func (s *service) group(id string) (*groups.Group, error) {
	if err := checkID("group", id); err != nil {
		return nil, err
	}
	g, ok := s.catalog().Group(id)
	if !ok {
		return nil, notFound("group %q does not exist", id)
	}
	return g, nil
}

// putGroup creates or replaces a group and returns it as stored.
func (s *service) putGroup(g groups.Group) (*groups.Group, error) {
	if err := g.Normalize(); err != nil {
		return nil, invalid("group %q: %v", g.ID, err)
	}
	data, err := fileJSON(g)
	if err != nil {
		return nil, err
	}
	c, err := s.write(func(c *catalog.Catalog) (catalog.Change, error) {
		return catalog.Change{File: c.GroupFile(g.ID), Data: data}, nil
	})
	if err != nil {
		return nil, err
	}
	stored, _ := c.Group(g.ID)
	return stored, nil
}

func (s *service) deleteGroup(id string) error {
	if err := checkID("group", id); err != nil {
		return err
	}
	_, err := s.write(func(c *catalog.Catalog) (catalog.Change, error) {
		if _, ok := c.Group(id); !ok {
			return catalog.Change{}, errUnchanged
		}
		return catalog.Change{File: c.GroupFile(id)}, nil
	})
	return err
}

func (s *service) profileList() []*catalog.Profile { return s.catalog().Profiles() }

func (s *service) profile(id string) (*catalog.Profile, error) {
	if err := checkID("profile", id); err != nil {
		return nil, err
	}
	p, ok := s.catalog().Profile(id)
	if !ok {
		return nil, notFound("profile %q does not exist", id)
	}
	return p, nil
}

// putProfile creates or replaces a profile and returns it as stored. With
// keepTemplates, a replaced profile keeps its ipxe_template and
// grub_template (for gRPC clients, which cannot express them).
func (s *service) putProfile(p profiles.Profile, keepTemplates bool) (*catalog.Profile, error) {
	if err := p.Validate(); err != nil {
		return nil, invalid("profile %q: %v", p.ID, err)
	}
	c, err := s.write(func(c *catalog.Catalog) (catalog.Change, error) {
		if old, ok := c.Profile(p.ID); ok && keepTemplates {
			p.IPXETemplate, p.GRUBTemplate = old.IPXETemplate, old.GRUBTemplate
		}
		data, err := fileJSON(p)
		if err != nil {
			return catalog.Change{}, err
		}
		return catalog.Change{File: c.ProfileFile(p.ID), Data: data}, nil
	})
	if err != nil {
		return nil, err
	}
	stored, _ := c.Profile(p.ID)
	return stored, nil
}

func (s *service) deleteProfile(id string) error {
	if err := checkID("profile", id); err != nil {
		return err
	}
	_, err := s.write(func(c *catalog.Catalog) (catalog.Change, error) {
		if _, ok := c.Profile(id); !ok {
			return catalog.Change{}, errUnchanged
		}
		return catalog.Change{File: c.ProfileFile(id)}, nil
	})
	return err
}

// A config kind is a directory of files a profile names: ignition or
// generic.

func (s *service) fileList(dir string) []string {
	names := s.catalog().Files(dir)
	if names == nil {
		names = []string{}
	}
	return names
}

func (s *service) file(dir, name string) ([]byte, error) {
	if err := checkName(dir, name); err != nil {
		return nil, err
	}
	b, ok := s.catalog().File(dir, name)
	if !ok {
		return nil, notFound("%s/%s does not exist", dir, name)
	}
	return b, nil
}

func (s *service) putFile(dir, name string, data []byte) error {
	if err := checkName(dir, name); err != nil {
		return err
	}
	if data == nil {
		data = []byte{} // nil would mean remove
	}
	_, err := s.write(func(*catalog.Catalog) (catalog.Change, error) {
		return catalog.Change{File: dir + "/" + name, Data: data}, nil
	})
	return err
}

func (s *service) deleteFile(dir, name string) error {
	if err := checkName(dir, name); err != nil {
		return err
	}
	_, err := s.write(func(c *catalog.Catalog) (catalog.Change, error) {
		if _, ok := c.File(dir, name); !ok {
			return catalog.Change{}, errUnchanged
		}
		return catalog.Change{File: dir + "/" + name}, nil
	})
	return err
}

// match is the group and profile a machine with labels gets.
func (s *service) match(labels groups.Labels) (*groups.Group, *catalog.Profile, error) {
	c := s.catalog()
	m, err := c.Select(labels)
	if err != nil {
		return nil, nil, notFound("no group matches %s", describe(labels))
	}
	p, ok := c.Profile(m.Group.Profile)
	if !ok {
		return m.Group, nil, notFound("group %q matches, but names profile %q, which does not exist", m.Group.ID, m.Group.Profile)
	}
	return m.Group, p, nil
}

func describe(l groups.Labels) string {
	if len(l) == 0 {
		return "no labels"
	}
	var b bytes.Buffer
	for i, k := range sortedLabelKeys(l) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", k, l[k])
	}
	return b.String()
}

// checkID accepts the IDs Load accepts for groups and profiles.
func checkID(kind, id string) error {
	switch {
	case id == "":
		return invalid("%s id: empty; give the %s's id", kind, kind)
	case !groups.ValidID(id):
		return invalid("%s id %q: not a valid id (%s)", kind, id, groups.IDRule)
	}
	return nil
}

// checkName accepts the file names a profile may name.
func checkName(dir, name string) error {
	switch {
	case name == "":
		return invalid("%s name: empty; give the file's name, e.g. node1.ign", dir)
	case !profiles.ValidID(name):
		return invalid("%s name %q: not a valid file name (%s)", dir, name, profiles.IDRule)
	}
	return nil
}

// fileJSON is the data-directory file for a group or profile: indented
// JSON, keys in a fixed order, a final newline.
func fileJSON(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, invalid("encoding: %v", err)
	}
	return append(b, '\n'), nil
}
