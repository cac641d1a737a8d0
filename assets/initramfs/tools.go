package initramfs

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// sbinDirs are searched after PATH: a non-root user's PATH often lacks
// the directories where mkfs and friends live.
var sbinDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// systemLibDirs are the directories the dynamic loader searches without
// an ld.so.cache (glibc on Debian, amd64). A library found elsewhere on
// the host is put in /usr/lib in the initramfs, which has no cache.
var systemLibDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"}

func hostLookPath(name string) (string, error) {
	dirs := filepath.SplitList(os.Getenv("PATH"))
	dirs = append(dirs, sbinDirs...)
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("not found")
}

func addTools(ctx context.Context, im image, o Options, res *Result) error {
	tools := o.Tools
	if tools == nil {
		tools = DefaultTools
	}
	look := o.LookPath
	if look == nil {
		look = hostLookPath
	}
	res.Tools = map[string]string{}
	libs := &libResolver{dirs: ldSoConfDirs("/etc/ld.so.conf"), seen: map[string]bool{}}
	for _, t := range tools {
		if err := ctx.Err(); err != nil {
			return err
		}
		name, optional := strings.CutSuffix(strings.TrimSpace(t), "?")
		if name == "" {
			continue
		}
		p := name
		if !strings.Contains(name, "/") {
			var err error
			p, err = look(name)
			if err != nil {
				if optional {
					res.MissingTools = append(res.MissingTools, name)
					continue
				}
				if pkg := toolPackages[name]; pkg != "" {
					return fmt.Errorf("initramfs: tool %s not found on PATH (install the Debian package %s, or leave the tool out with -tools)", name, pkg)
				}
				return fmt.Errorf("initramfs: tool %s not found on PATH (install it, or leave it out with -tools)", name)
			}
		}
		if !filepath.IsAbs(p) {
			abs, err := filepath.Abs(p)
			if err != nil {
				return fmt.Errorf("initramfs: tool %s: %w", name, err)
			}
			p = abs
		}
		// The tool keeps its name (mkfs.ext4 is mke2fs, which looks at
		// its own name) in its host directory.
		dst := filepath.Join(filepath.Dir(p), filepath.Base(p))
		if err := libs.add(p); err != nil {
			return fmt.Errorf("initramfs: tool %s (%s): %w", name, p, err)
		}
		im.add(dst, &entry{mode: ModeRegular | 0o755, src: p})
		res.Tools[filepath.Base(p)] = p
		for _, f := range toolFiles[name] {
			if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() {
				im.add(f, &entry{mode: ModeRegular | 0o644, src: f})
			}
		}
	}
	for _, l := range libs.found {
		im.add(l.dst, &entry{mode: ModeRegular | 0o755, src: l.src})
		res.Libraries = append(res.Libraries, l.src)
	}
	sort.Strings(res.Libraries)
	sort.Strings(res.MissingTools)
	return nil
}

// elfDeps returns a binary's ELF interpreter (empty for a static binary)
// and its DT_NEEDED libraries.
func elfDeps(p string) (interp string, needed []string, err error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", nil, fmt.Errorf("reading ELF: %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return "", nil, fmt.Errorf("reading the ELF interpreter: %w", err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	needed, err = f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return "", nil, fmt.Errorf("reading DT_NEEDED: %w", err)
	}
	return interp, needed, nil
}

type lib struct{ src, dst string }

// libResolver finds shared libraries the way the dynamic loader does:
// DT_RPATH (without DT_RUNPATH) and DT_RUNPATH with $ORIGIN, then the
// directories of /etc/ld.so.conf, then the system directories.
type libResolver struct {
	dirs  []string
	seen  map[string]bool // destination paths already added
	found []lib
}

func (r *libResolver) add(bin string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("reading ELF: %w", err)
	}
	defer f.Close()
	interp, needed, err := elfDeps(bin)
	if err != nil {
		return err
	}
	if interp != "" && !r.seen[interp] {
		if _, err := os.Stat(interp); err != nil {
			return fmt.Errorf("ELF interpreter: %w", err)
		}
		r.seen[interp] = true
		r.found = append(r.found, lib{src: interp, dst: interp})
	}
	var search []string
	runpath, _ := f.DynString(elf.DT_RUNPATH)
	if len(runpath) == 0 {
		rpath, _ := f.DynString(elf.DT_RPATH)
		search = append(search, splitPath(rpath, bin)...)
	}
	search = append(search, splitPath(runpath, bin)...)
	nSearch := len(search)
	search = append(search, r.dirs...)
	search = append(search, systemLibDirs...)
	for _, n := range needed {
		src, dir, err := findLib(n, search, f.Class, f.Machine)
		if err != nil {
			return err
		}
		dst := src
		if !contains(systemLibDirs, dir) && !contains(search[:nSearch], dir) {
			dst = filepath.Join("/usr/lib", n)
		}
		if r.seen[dst] {
			continue
		}
		r.seen[dst] = true
		r.found = append(r.found, lib{src: src, dst: dst})
		if err := r.add(src); err != nil {
			return fmt.Errorf("%s: %w", src, err)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

func splitPath(list []string, bin string) []string {
	var out []string
	for _, l := range list {
		for _, d := range strings.Split(l, ":") {
			d = strings.ReplaceAll(d, "${ORIGIN}", filepath.Dir(bin))
			d = strings.ReplaceAll(d, "$ORIGIN", filepath.Dir(bin))
			if d != "" {
				out = append(out, filepath.Clean(d))
			}
		}
	}
	return out
}

// findLib finds a library of the binary's class and machine (a 32-bit
// libc in /usr/lib32 must not satisfy a 64-bit tool).
func findLib(name string, dirs []string, class elf.Class, machine elf.Machine) (string, string, error) {
	if strings.Contains(name, "/") {
		return name, filepath.Dir(name), nil
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		ok := f.Class == class && f.Machine == machine
		f.Close()
		if ok {
			return p, d, nil
		}
	}
	return "", "", fmt.Errorf("shared library %s not found in %s", name, strings.Join(dirs, ", "))
}

// ldSoConfDirs reads the library directories of an ld.so.conf and the
// files it includes.
func ldSoConfDirs(conf string) []string {
	var dirs []string
	seen := map[string]bool{}
	var read func(p string, depth int)
	read = func(p string, depth int) {
		if depth > 8 || seen[p] {
			return
		}
		seen[p] = true
		b, err := os.ReadFile(p)
		if err != nil {
			return
		}
		for _, l := range lines(b) {
			if i := strings.IndexByte(l, '#'); i >= 0 {
				l = strings.TrimSpace(l[:i])
			}
			if l == "" {
				continue
			}
			if rest, ok := strings.CutPrefix(l, "include"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
				pat := strings.TrimSpace(rest)
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(filepath.Dir(p), pat)
				}
				matches, _ := filepath.Glob(pat)
				sort.Strings(matches)
				for _, m := range matches {
					read(m, depth+1)
				}
				continue
			}
			dirs = append(dirs, filepath.Clean(l))
		}
	}
	read(conf, 0)
	return dirs
}
