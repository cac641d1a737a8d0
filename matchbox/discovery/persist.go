package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// tokenFile is a token on disk: DIR/<token>.json.
type tokenFile struct {
	Token   string    `json:"token"`
	Size    int       `json:"size"`
	Created time.Time `json:"created"`
	Events  []event   `json:"events"`
}

const fileExt = ".json"

// save writes t with the given history, atomically and durably: a
// temporary file in the same directory, fsync, rename, fsync of the
// directory. Memory-only services write nothing.
func (s *Service) save(t *token, events []event) error {
	if s.dir == "" {
		return nil
	}
	b, err := json.Marshal(tokenFile{Token: t.id, Size: t.size, Created: t.created.UTC(), Events: events})
	if err != nil {
		return fmt.Errorf("encoding token %s: %w", short(t.id), err)
	}
	// Made on first write, so a data directory that never bootstraps a
	// cluster never grows a discovery/ directory.
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("discovery directory: %w", err)
	}
	if err := writeFileAtomic(s.dir, t.id+fileExt, b); err != nil {
		return fmt.Errorf("saving token %s: %w", short(t.id), err)
	}
	return nil
}

func (s *Service) removeFile(id string) error {
	if s.dir == "" {
		return nil
	}
	if err := os.Remove(filepath.Join(s.dir, id+fileExt)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(s.dir)
}

func writeFileAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// load reads every token file in s.dir, creating the directory if it is
// missing. Leftover temporary files (a crash mid-write) are removed: the
// write they belonged to was never acknowledged.
func (s *Service) load() error {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing persisted yet
	}
	if err != nil {
		return fmt.Errorf("discovery directory: %w", err)
	}
	now := s.now()
	for _, e := range ents {
		name := e.Name()
		path := filepath.Join(s.dir, name)
		switch {
		case strings.HasPrefix(name, ".") && strings.Contains(name, fileExt+".tmp-"):
			os.Remove(path)
			continue
		case e.IsDir() || !strings.HasSuffix(name, fileExt):
			continue
		}
		t, err := readToken(path)
		if err != nil {
			s.log.Warn("discovery token file ignored", "path", path, "error", err.Error())
			continue
		}
		if s.expired(t, now) {
			if err := s.removeFile(t.id); err != nil {
				s.log.Warn("discovery token file not removed", "path", path, "error", err.Error())
			}
			continue
		}
		s.tokens[t.id] = t
	}
	if len(s.tokens) > 0 {
		s.log.Info("discovery tokens loaded", "path", s.dir, "tokens", len(s.tokens))
	}
	return nil
}

// readToken reads and checks one token file.
func readToken(path string) (*token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f tokenFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if want := strings.TrimSuffix(filepath.Base(path), fileExt); f.Token != want || !validToken(f.Token) {
		return nil, fmt.Errorf("token %q: want %q, the file's name", f.Token, want)
	}
	if f.Size < 1 || f.Size > MaxSize {
		return nil, fmt.Errorf("size %d: want 1 to %d", f.Size, MaxSize)
	}
	if len(f.Events) == 0 || len(f.Events) > maxEvents {
		return nil, fmt.Errorf("%d events: want 1 to %d", len(f.Events), maxEvents)
	}
	if first := f.Events[0]; first != (event{Index: 1, Action: actionCreate, Key: sizeKey, Value: strconv.Itoa(f.Size)}) {
		return nil, fmt.Errorf("first event %+v: want the size key's creation", first)
	}
	t := newToken(f.Token, f.Size, f.Created)
	live := map[string]uint64{}
	for i, e := range f.Events[1:] {
		if e.Index <= f.Events[i].Index {
			return nil, fmt.Errorf("event %d: index %d after %d", i+1, e.Index, f.Events[i].Index)
		}
		if err := validMemberKey(e.Key); err != nil {
			return nil, fmt.Errorf("event %d: %w", i+1, err)
		}
		switch e.Action {
		case actionCreate:
			if _, ok := live[e.Key]; ok {
				return nil, fmt.Errorf("event %d: %s registered twice", i+1, e.Key)
			}
			live[e.Key] = e.Index
		case actionDelete:
			if c, ok := live[e.Key]; !ok || c != e.Created {
				return nil, fmt.Errorf("event %d: deletes %s, not registered at %d", i+1, e.Key, e.Created)
			}
			delete(live, e.Key)
		default:
			return nil, fmt.Errorf("event %d: action %q", i+1, e.Action)
		}
	}
	t.events = f.Events
	return t, nil
}
