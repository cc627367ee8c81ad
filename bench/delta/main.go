// Command delta is the delta-install bench (bench/delta.sh). For each
// pair of root images (old, new) given with -pairs, it makes the new
// image's verity tree (the product's fixed salt, as the old one's), a UKI
// naming its root hash and a signed bundle, serves them from an HTTP
// server on 127.0.0.1 that counts what it sends, and times, in one run:
//
//   - for the first pair, a full install from the local bundle file (the
//     reference) and a full install over HTTP;
//   - abboot's delta install over HTTP, seeded from slot A, which holds
//     the old image and its tree (the running slot), and from slot B;
//   - for a pair given the version before the old one (PREV), the local
//     full install and the delta install again into a slot B holding
//     PREV and its tree, as the inactive slot does after every update
//     but the first (kinds "local/prev" and "delta/prev"): the blocks
//     B holds in place are not written;
//   - casync: `casync make` of the new image into a chunk store (its
//     defaults), then, timed, `casync extract --seed=OLD` from the store
//     over HTTP.
//
// Each install goes into slot B of a fresh copy of the same disk image
// (slot B empty, or holding PREV), from a dropped page cache. Rounds alternate the kinds and the medians
// are reported. Targets: the delta fetches at most 2% of the full root
// image, and takes no longer than the full install from a local file.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/abboot/abboot/bench/internal/benchutil"
	"github.com/abboot/abboot/bench/internal/stats"
	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/delta"
	"github.com/abboot/abboot/pkg/diskimage"
	"github.com/abboot/abboot/pkg/fetch"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/install"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
	"github.com/abboot/abboot/pkg/uki"
	"github.com/abboot/abboot/pkg/verity"
)

func main() {
	pairs := flag.String("pairs", "", "NAME:OLD:NEW[:PREV],... root image pairs; the first is also installed in full")
	flag.IntVar(&rounds, "n", 3, "rounds of each")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the delta installs to `file`")
	flag.Parse()
	if err := run(*pairs); err != nil {
		fmt.Fprintln(os.Stderr, "bench/delta:", err)
		os.Exit(1)
	}
}

var (
	rounds     int
	cpuProfile string
)

// salt is the product's fixed verity salt: the same in every version, so
// that the running slot's own tree indexes its blocks.
var salt = sha256.Sum256([]byte("abboot bench/delta verity salt"))

// pair is an update from old to new; prev, if set, is the version
// before old.
type pair struct{ name, old, new, prev string }

// result is one timed run.
type result struct {
	d        time.Duration
	bytes    int64 // sent by the server
	requests int64
	reused   int64
	inPlace  int64
	ukiBytes int64 // of bytes, sent in ranges of the UKI
}

func run(pairsFlag string) error {
	var pairs []pair
	for _, p := range strings.Split(pairsFlag, ",") {
		f := strings.Split(p, ":")
		if len(f) != 3 && len(f) != 4 {
			return fmt.Errorf("-pairs %q: want NAME:OLD:NEW[:PREV],...", pairsFlag)
		}
		pairs = append(pairs, pair{f[0], f[1], f[2], ""})
		if len(f) == 4 {
			pairs[len(pairs)-1].prev = f[3]
		}
	}
	dir, err := os.MkdirTemp("", "abboot-bench-delta-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv := &counter{h: http.FileServer(http.Dir(dir))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go http.Serve(ln, srv)
	base := "http://" + ln.Addr().String() + "/"

	for i, pr := range pairs {
		b, err := prepare(dir, pr)
		if err != nil {
			return fmt.Errorf("%s: %w", pr.name, err)
		}
		kinds := []string{"delta", "casync"}
		if i == 0 {
			kinds = append([]string{"local", "full"}, kinds...)
		}
		if pr.prev != "" {
			kinds = append(kinds, "local"+prevKind, "delta"+prevKind)
		}
		res := map[string][]result{}
		for r := range rounds {
			for _, k := range kinds {
				x, err := b.once(k, base+pr.name+"/", srv)
				if err != nil {
					return fmt.Errorf("%s: %s: %w", pr.name, k, err)
				}
				if r == 0 {
					fmt.Printf("  %s %s round 1: %.2f s, %d bytes in %d requests\n", pr.name, k, x.d.Seconds(), x.bytes, x.requests)
				}
				res[k] = append(res[k], x)
			}
		}
		b.report(kinds, res)
	}
	return nil
}

// bench is one pair, ready to install.
type bench struct {
	pair
	dir     string
	p       func(string) string
	pub     ed25519.PublicKey
	newSize int64
	leaves  int64 // bytes of the new tree
	ukiSize int64
	ukiOff  int64 // in the bundle
}

func prepare(top string, pr pair) (*bench, error) {
	b := &bench{pair: pr, dir: filepath.Join(top, pr.name)}
	b.p = func(n string) string { return filepath.Join(b.dir, n) }
	if err := os.MkdirAll(b.dir, 0o755); err != nil {
		return nil, err
	}
	oldHash, err := benchutil.FormatTree(pr.old, b.p("old.verity"), verity.Params{Salt: salt[:]})
	if err != nil {
		return nil, err
	}
	hash, err := benchutil.FormatTree(pr.new, b.p("new.verity"), verity.Params{Salt: salt[:]})
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(pr.new)
	if err != nil {
		return nil, err
	}
	b.newSize = fi.Size()
	ti, _ := os.Stat(b.p("new.verity"))
	b.leaves = ti.Size()
	stub := make([]byte, 8<<20) // a kernel and initramfs of typical size
	rand.Read(stub)
	os.WriteFile(b.p("kernel"), stub, 0o644)
	os.WriteFile(b.p("initrd"), stub[:4096], 0o644)
	// Slot A's UKI has the same kernel and initramfs: an update of the
	// root changes the UKI's command line and os-release only.
	for _, u := range []struct{ name, hash, version string }{{"a.efi", oldHash, "1"}, {"b.efi", hash, "2"}} {
		if err := uki.Build(uki.Spec{Kernel: b.p("kernel"), Initrd: b.p("initrd"), Cmdline: "abboot.roothash=" + u.hash, OSRel: "VERSION_ID=" + u.version + "\n"}, b.p(u.name)); err != nil {
			return nil, err
		}
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	b.pub = pub
	b.ukiSize = fileSize(b.p("b.efi"))
	f, err := os.Create(b.p("new.abb"))
	if err != nil {
		return nil, err
	}
	m := bundle.Manifest{Version: "2", Compatible: "bench", RootHash: hash}
	if err := bundle.Write(f, m, map[string]string{"root": pr.new, "verity": b.p("new.verity"), "uki": b.p("b.efi")}, key); err != nil {
		return nil, err
	}
	f.Close()
	b.ukiOff = fileSize(b.p("new.abb")) - b.ukiSize // the last payload

	// The disks: slot A runs the old image, slot B is empty, or holds
	// the version before.
	mib := int(max(b.newSize, fileSize(pr.old), fileSize(pr.prev))>>20) + 2
	disk := func(name, bRoot, bTree string) error {
		return diskimage.Build(b.p(name), diskimage.Spec{ESPSizeMiB: diskimage.MinESPSizeMiB, Partitions: []diskimage.PartSpec{
			{Label: slot.A.RootLabel(), Type: gpt.TypeRootX86_64, Image: pr.old, SizeMiB: mib, Attributes: slotstore.WithAttrs(0, slotstate.Attrs{Priority: 1, Successful: true})},
			{Label: slot.A.VerityLabel(), Type: gpt.TypeRootVerityX86_64, Image: b.p("old.verity"), SizeMiB: mib/100 + 2},
			{Label: slot.B.RootLabel(), Type: gpt.TypeRootX86_64, Image: bRoot, SizeMiB: mib},
			{Label: slot.B.VerityLabel(), Type: gpt.TypeRootVerityX86_64, Image: bTree, SizeMiB: mib/100 + 2},
		}})
	}
	if err := disk("pristine.img", "", ""); err != nil {
		return nil, err
	}
	if pr.prev != "" {
		if _, err := benchutil.FormatTree(pr.prev, b.p("prev.verity"), verity.Params{Salt: salt[:]}); err != nil {
			return nil, err
		}
		if err := disk("pristine-prev.img", pr.prev, b.p("prev.verity")); err != nil {
			return nil, err
		}
	}
	// casync's chunk store, made with its defaults (server side, not timed).
	if out, err := exec.Command("casync", "make", "--store="+b.p("store.castr"), b.p("new.caibx"), pr.new).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("casync make: %v: %s", err, out)
	}
	return b, nil
}

// prevKind marks the kinds of install into a slot B that holds the
// version before.
const prevKind = "/prev"

// once runs one install of kind k and checks what it wrote.
func (b *bench) once(k, url string, srv *counter) (result, error) {
	os.Remove(b.p("disk.img"))
	os.Remove(b.p("out.img"))
	k, prev := strings.CutSuffix(k, prevKind)
	pristine := "pristine.img"
	if prev {
		pristine = "pristine-prev.img"
	}
	if k != "casync" {
		if out, err := exec.Command("cp", "--sparse=always", b.p(pristine), b.p("disk.img")).CombinedOutput(); err != nil {
			return result{}, fmt.Errorf("cp: %v: %s", err, out)
		}
	}
	os.RemoveAll(b.p("esp"))
	os.MkdirAll(b.p("esp/EFI/abboot"), 0o755)
	if out, err := exec.Command("cp", b.p("a.efi"), b.p("esp/"+slot.A.UKIPath())).CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("cp: %v: %s", err, out)
	}
	benchutil.DropCaches()
	srv.reset(b.ukiOff)
	var x result
	start := time.Now()
	var err error
	switch k {
	case "casync":
		var out []byte
		out, err = exec.Command("casync", "extract", "--store="+url+"store.castr", "--seed="+b.old, url+"new.caibx", b.p("out.img")).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v: %s", err, out)
		}
	case "delta":
		if cpuProfile != "" {
			f, perr := os.Create(cpuProfile)
			if perr != nil {
				return x, perr
			}
			pprof.StartCPUProfile(f)
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
		fallthrough
	default:
		x.reused, x.inPlace, err = b.install(k, url)
	}
	x.d = time.Since(start)
	x.bytes, x.requests, x.ukiBytes = srv.bytes.Load(), srv.requests.Load(), srv.uki.Load()
	if err != nil {
		return x, err
	}
	if k == "casync" {
		return x, sameFile(b.p("out.img"), b.new)
	}
	return x, nil
}

// install installs the bundle into slot B: from the local file, in full
// over HTTP or by delta over HTTP. pkg/install checks what it wrote
// against the bundle's hashes and the root hash.
func (b *bench) install(k, url string) (reused, inPlace int64, err error) {
	store, err := slotstore.NewGPT(b.p("disk.img"))
	if err != nil {
		return 0, 0, err
	}
	t := install.Target{Slot: slot.B, Running: slot.A, Store: store, ESPDir: b.p("esp"), Disk: b.p("disk.img")}
	var src io.ReadCloser
	var ds *delta.Source
	switch k {
	case "local":
		src, err = os.Open(b.p("new.abb"))
	case "full":
		src, err = fetch.Open(context.Background(), url+"new.abb", fetch.Options{})
	case "delta":
		// As abctl does: the slots' UKIs on the ESP (here A's).
		ua, err := os.Open(b.p("esp/" + slot.A.UKIPath()))
		if err != nil {
			return 0, 0, err
		}
		defer ua.Close()
		ds, err = delta.Open(context.Background(), url+"new.abb", delta.Options{UKIs: []io.ReaderAt{ua}, Log: func(_ string, kv ...any) {
			if kv[1] == "plan" || kv[1] == "tree" || kv[1] == "uki" {
				fmt.Println("   ", kv)
			}
		}})
		src = ds
	}
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	r, err := bundle.NewReader(src, bundle.Keyring{b.pub}, nil)
	if err != nil {
		return 0, 0, err
	}
	var o install.Options
	if ds != nil {
		seeds, c, err := delta.SlotSeeds(b.p("disk.img"), slot.A, slot.B)
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		if err := ds.Plan(r, seeds); err != nil {
			return 0, 0, err
		}
		o.InPlace = ds.InPlace
	}
	res, err := install.Install(r, t, o)
	if err != nil {
		return 0, 0, err
	}
	if ds != nil {
		reused = ds.Stats().Reused
	}
	return reused, res.InPlace, nil
}

func (b *bench) report(kinds []string, res map[string][]result) {
	fmt.Printf("delta bench, %s: new root %.1f MiB (tree %.2f MiB), bundle %.1f MiB; medians of %d alternating rounds\n",
		b.name, mib(b.newSize), mib(b.leaves), mib(fileSize(b.p("new.abb"))), rounds)
	fmt.Printf("  (the UKI: %.1f MiB, its kernel and initramfs those of slot A's; %% of root counts the rest: root blocks, tree, header)\n", mib(b.ukiSize))
	fmt.Printf("  %-11s %9s %12s %9s %9s %13s %13s\n", "", "time s", "fetched MiB", "% of root", "requests", "in place MiB", "of UKI KiB")
	med := map[string]result{}
	for _, k := range kinds {
		rs := res[k]
		m := rs[0]
		ds := make([]time.Duration, len(rs))
		for i, r := range rs {
			ds[i] = r.d
		}
		m.d = stats.Median(ds)
		med[k] = m
		fmt.Printf("  %-11s %9.2f %12.2f %9.2f %9d %13.1f %13.0f\n", k, m.d.Seconds(), mib(m.bytes), 100*float64(b.rootBytes(k, m))/float64(b.newSize), m.requests, mib(m.inPlace), float64(m.bytes-b.rootBytes(k, m))/1024)
	}
	d := med["delta"]
	fmt.Printf("  delta fetched %.2f%% of the new root, tree included (want <= 2%%), reused %.1f MiB from the slots\n", 100*float64(b.rootBytes("delta", d))/float64(b.newSize), mib(d.reused))
	if l, ok := med["local"]; ok {
		fmt.Printf("  full from a local file / delta: %.2f (want >= 1)\n", l.d.Seconds()/d.d.Seconds())
	}
	if p, ok := med["delta"+prevKind]; ok {
		fmt.Printf("  slot B holding the version before: full from a local file / delta: %.2f (want >= 1); %.1f MiB of the root in place, not written\n",
			med["local"+prevKind].d.Seconds()/p.d.Seconds(), mib(p.inPlace))
	}
	c := med["casync"]
	fmt.Printf("  casync / delta: %.2f x the root's bytes, %.2f x the time\n", float64(c.bytes)/float64(b.rootBytes("delta", d)), c.d.Seconds()/d.d.Seconds())
}

// rootBytes is what a run of kind k fetched for the root: all but the
// UKI for abboot's installs (casync fetches only the root).
func (b *bench) rootBytes(k string, r result) int64 {
	switch {
	case k == "casync" || r.bytes == 0:
		return r.bytes
	case strings.HasPrefix(k, "delta"):
		return r.bytes - r.ukiBytes
	}
	return r.bytes - b.ukiSize // a download of the whole bundle
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func sameFile(a, b string) error {
	out, err := exec.Command("cmp", a, b).CombinedOutput()
	if err != nil {
		return fmt.Errorf("casync's output differs from the new image: %s", out)
	}
	return nil
}

// counter is an http.Handler that counts the body bytes it sends and the
// requests it serves, and apart the bytes of ranges that start at ukiOff
// or later.
type counter struct {
	h                    http.Handler
	bytes, requests, uki atomic.Int64
	ukiOff               atomic.Int64
}

func (c *counter) reset(ukiOff int64) {
	c.bytes.Store(0)
	c.requests.Store(0)
	c.uki.Store(0)
	c.ukiOff.Store(ukiOff)
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.requests.Add(1)
	var from int64
	_, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &from)
	c.h.ServeHTTP(countingWriter{w, c, err == nil && from >= c.ukiOff.Load()}, r)
}

type countingWriter struct {
	http.ResponseWriter
	c   *counter
	uki bool
}

func (w countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.c.bytes.Add(int64(n))
	if w.uki {
		w.c.uki.Add(int64(n))
	}
	return n, err
}
