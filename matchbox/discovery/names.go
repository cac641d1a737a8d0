package discovery

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// namesFile maps cluster names to tokens, one "name token" line each. Its
// extension keeps load from reading it as a token.
const namesFile = "names.txt"

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Named returns the token of the cluster called name, creating one for
// size members the first time it is asked for, and again after that
// token expired. Templates use it ({{ discovery "prod-etcd" 3 }}) so one
// profile serves every member of a cluster. Asking for another size than
// the live token has is an error: a token's size cannot change.
func (s *Service) Named(name string, size int) (string, error) {
	if !namePattern.MatchString(name) {
		return "", fmt.Errorf("discovery name %q: want letters, digits, '.', '_' or '-'", name)
	}
	s.namesMu.Lock()
	defer s.namesMu.Unlock()
	if id, ok := s.names[name]; ok {
		if t, ok := s.lookup(id); ok {
			if t.size != size {
				return "", fmt.Errorf("discovery %q: its token is for %d members, not %d; a token's size cannot change (it expires at %s)",
					name, t.size, size, t.created.Add(s.ttl).Format(time.RFC3339))
			}
			return id, nil
		}
	}
	id, err := s.NewToken(size)
	if err != nil {
		return "", fmt.Errorf("discovery %q: %w", name, err)
	}
	s.names[name] = id
	if err := s.saveNames(); err != nil {
		return "", fmt.Errorf("discovery %q: %w", name, err)
	}
	s.log.Info("discovery token named", "name", name, "token", short(id), "size", size)
	return id, nil
}

func (s *Service) saveNames() error {
	if s.dir == "" {
		return nil
	}
	keys := make([]string, 0, len(s.names))
	for k := range s.names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %s\n", k, s.names[k])
	}
	return writeFileAtomic(s.dir, namesFile, b.Bytes())
}

func (s *Service) loadNames() error {
	s.names = make(map[string]string)
	if s.dir == "" {
		return nil
	}
	f, err := os.Open(filepath.Join(s.dir, namesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("discovery names: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, id, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok {
			continue
		}
		if _, live := s.lookup(id); live {
			s.names[name] = id
		}
	}
	return sc.Err()
}
