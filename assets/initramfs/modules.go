package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// moduleIndex is what a kernel's modules directory says about its modules.
type moduleIndex struct {
	dir     string
	path    map[string]string   // name → path relative to dir, as in modules.dep
	deps    map[string][]string // name → names of every module it needs
	builtin map[string]bool
	softPre map[string][]string // name → module names or aliases to load first
	aliases [][2]string         // pattern, module name
}

// modName is a module's canonical name: the file's base name without
// .ko and compression suffixes, dashes as underscores.
func modName(p string) string {
	b := path.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

func loadModuleIndex(dir string) (*moduleIndex, error) {
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("reading the module list: %w (run depmod for this kernel, or point -kernel-modules at a directory with modules.dep)", err)
	}
	ix := &moduleIndex{dir: dir, path: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}, softPre: map[string][]string{}}
	for _, l := range lines(dep) {
		file, rest, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("%s: line %q: want \"module.ko: dependencies…\"", filepath.Join(dir, "modules.dep"), l)
		}
		n := modName(file)
		ix.path[n] = file
		for _, d := range strings.Fields(rest) {
			ix.deps[n] = append(ix.deps[n], modName(d))
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range lines(b) {
			ix.builtin[modName(l)] = true
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.softdep")); err == nil {
		// "softdep NAME pre: A B post: C": only pre-dependencies matter
		// here (ext4 wants crc32c's implementation before it).
		for _, l := range lines(b) {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "softdep" {
				continue
			}
			pre := false
			for _, w := range f[2:] {
				switch w {
				case "pre:":
					pre = true
				case "post:":
					pre = false
				default:
					if pre {
						ix.softPre[modName(f[1])] = append(ix.softPre[modName(f[1])], w)
					}
				}
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.alias")); err == nil {
		for _, l := range lines(b) {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == "alias" {
				ix.aliases = append(ix.aliases, [2]string{f[1], modName(f[2])})
			}
		}
	}
	return ix, nil
}

// resolve maps a module name or alias to module names that have files.
func (ix *moduleIndex) resolve(name string) []string {
	n := strings.ReplaceAll(name, "-", "_")
	if _, ok := ix.path[n]; ok {
		return []string{n}
	}
	var out []string
	for _, a := range ix.aliases {
		if ok, _ := path.Match(a[0], name); ok || a[0] == name {
			if _, have := ix.path[a[1]]; have {
				out = append(out, a[1])
			}
		}
	}
	return out
}

// order returns the modules to load for the requested names, each after
// the modules it depends on, and sorts the rest into the result.
func (ix *moduleIndex) order(requested []string, res *Result) ([]string, error) {
	var out []string
	done := map[string]bool{}
	var visit func(n string, stack []string)
	visit = func(n string, stack []string) {
		if done[n] {
			return
		}
		for _, s := range stack {
			if s == n {
				return // a dependency cycle: modules.dep has none, but never loop
			}
		}
		stack = append(stack, n)
		for _, soft := range ix.softPre[n] {
			for _, m := range ix.resolve(soft) {
				visit(m, stack)
			}
		}
		// modules.dep lists every transitive dependency, nearest first;
		// visiting each recursively orders them whatever the listing.
		deps := ix.deps[n]
		for i := len(deps) - 1; i >= 0; i-- {
			visit(deps[i], stack)
		}
		done[n] = true
		out = append(out, n)
	}
	for _, r := range requested {
		name, optional := strings.CutSuffix(strings.TrimSpace(r), "?")
		if name == "" {
			continue
		}
		n := strings.ReplaceAll(name, "-", "_")
		if _, ok := ix.path[n]; ok {
			visit(n, nil)
			continue
		}
		if ix.builtin[n] {
			res.Builtin = append(res.Builtin, n)
			continue
		}
		if optional {
			res.MissingModules = append(res.MissingModules, n)
			continue
		}
		return nil, fmt.Errorf("module %s: not in %s/modules.dep nor built into the kernel (check the name with modinfo, or mark it optional as %s?)", name, ix.dir, name)
	}
	return out, nil
}

func addModules(ctx context.Context, im image, o Options, res *Result) error {
	requested := o.Modules
	if requested == nil {
		for _, m := range DefaultModules {
			requested = append(requested, m+"?")
		}
	}
	ver, dir := o.KernelVersion, o.ModulesDir
	switch {
	case ver == "" && dir != "":
		ver = filepath.Base(filepath.Clean(dir))
	case ver == "":
		v, err := HostKernelVersion()
		if err != nil {
			if len(requested) == 0 {
				return nil
			}
			return fmt.Errorf("initramfs: %w", err)
		}
		ver = v
	}
	if dir == "" {
		dir = filepath.Join("/lib/modules", ver)
	}
	res.KernelVersion, res.ModulesDir = ver, dir
	if len(requested) == 0 {
		return nil
	}
	ix, err := loadModuleIndex(dir)
	if err != nil {
		return fmt.Errorf("initramfs: kernel %s: %w", ver, err)
	}
	order, err := ix.order(requested, res)
	if err != nil {
		return fmt.Errorf("initramfs: kernel %s: %w", ver, err)
	}
	var list bytes.Buffer
	fmt.Fprintf(&list, "# Kernel modules for %s, in load order (written by kindling initramfs build).\n", ver)
	for _, n := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := ix.path[n]
		data, err := readModule(filepath.Join(dir, rel))
		if err != nil {
			return fmt.Errorf("initramfs: module %s: %w", n, err)
		}
		dst := path.Join("lib/modules", ver, stripCompression(rel))
		im.add(dst, &entry{mode: ModeRegular | 0o644, data: data})
		fmt.Fprintf(&list, "/%s\n", dst)
	}
	im.add("etc/kindling/modules", &entry{mode: ModeRegular | 0o644, data: list.Bytes()})
	im.add("etc/kindling/kernel-version", &entry{mode: ModeRegular | 0o644, data: []byte(ver + "\n")})
	res.Modules = order
	sort.Strings(res.Builtin)
	sort.Strings(res.MissingModules)
	return nil
}

func stripCompression(p string) string {
	for _, s := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+s) {
			return strings.TrimSuffix(p, s)
		}
	}
	return p
}

// readModule returns a module file's contents, decompressed.
func readModule(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(p, ".ko.xz"):
		xr, err := xz.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompressing %s: %w", p, err)
		}
		r = xr
	case strings.HasSuffix(p, ".ko.zst"):
		zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("decompressing %s: %w", p, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(p, ".ko.gz"):
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompressing %s: %w", p, err)
		}
		r = gr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	if !bytes.HasPrefix(b, []byte("\x7fELF")) {
		return nil, fmt.Errorf("%s: not an ELF module after decompression", p)
	}
	return b, nil
}
