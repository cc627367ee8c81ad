// Command install is the install bench (bench/install.sh). It makes a
// root image of -size MiB, its verity tree, a UKI naming its root hash and
// a signed bundle of the three, then times, on the same machine in the
// same run:
//
//   - pkg/install writing the bundle into slot B of a file-backed disk
//     (one pass: hashing, writing and reading back overlapped);
//   - dd of the root image into a file with conv=fsync, then sha256sum of it
//     (the two passes a shell script would make).
//
// Target: the installer at least as fast as dd alone.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/abboot/abboot/bench/internal/benchutil"
	"github.com/abboot/abboot/bench/internal/stats"
	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/diskimage"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/install"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
	"github.com/abboot/abboot/pkg/uki"
	"github.com/abboot/abboot/pkg/verity"
)

func main() {
	size := flag.Int("size", 1024, "root image size in MiB")
	flag.IntVar(&rounds, "n", 3, "rounds of each")
	flag.Parse()
	if err := run(int64(*size) << 20); err != nil {
		fmt.Fprintln(os.Stderr, "bench/install:", err)
		os.Exit(1)
	}
}

var rounds int

func run(size int64) error {
	dir, err := os.MkdirTemp("", "abboot-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p := func(n string) string { return filepath.Join(dir, n) }

	// The root image: random bytes (incompressible, like a real image).
	if err := randomFile(p("root.img"), size); err != nil {
		return err
	}
	params, err := verity.NewParams()
	if err != nil {
		return err
	}
	hash, err := benchutil.FormatTree(p("root.img"), p("verity.img"), params)
	if err != nil {
		return err
	}
	stub := make([]byte, 1<<20)
	rand.Read(stub)
	os.WriteFile(p("kernel"), stub, 0o644)
	os.WriteFile(p("initrd"), stub[:4096], 0o644)
	if err := uki.Build(uki.Spec{Kernel: p("kernel"), Initrd: p("initrd"), Cmdline: "abboot.roothash=" + hash, OSRel: "VERSION_ID=2\n"}, p("b.efi")); err != nil {
		return err
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	f, err := os.Create(p("b.abb"))
	if err != nil {
		return err
	}
	m := bundle.Manifest{Version: "2", Compatible: "bench", RootHash: hash}
	if err := bundle.Write(f, m, map[string]string{"root": p("root.img"), "verity": p("verity.img"), "uki": p("b.efi")}, key); err != nil {
		return err
	}
	f.Close()

	// Rounds alternate the two, each from a dropped page cache and into
	// newly made files (a fresh disk image; dd's output file removed), and
	// the medians are compared: on a virtual machine one run of either can
	// take twice as long as the next.
	var ours, dd, ddsum []time.Duration
	for i := range rounds {
		d, err := installOnce(p, size, pub, i == 0)
		if err != nil {
			return err
		}
		ours = append(ours, d)
		os.Remove(p("dd.img"))
		benchutil.DropCaches()
		start := time.Now()
		if out, err := exec.Command("dd", "if="+p("root.img"), "of="+p("dd.img"), "bs=4M", "conv=fsync", "status=none").CombinedOutput(); err != nil {
			return fmt.Errorf("dd: %v: %s", err, out)
		}
		dd = append(dd, time.Since(start))
		if out, err := exec.Command("sha256sum", p("root.img")).CombinedOutput(); err != nil {
			return fmt.Errorf("sha256sum: %v: %s", err, out)
		}
		ddsum = append(ddsum, time.Since(start))
	}
	o, d, ds := stats.Median(ours), stats.Median(dd), stats.Median(ddsum)
	fmt.Printf("install bench: %d MiB root into a file-backed slot, medians of %d alternating rounds\n", size>>20, rounds)
	fmt.Printf("  abctl's installer (write + hash + read back)  %6.2f s  %v\n", o.Seconds(), ours)
	fmt.Printf("  dd conv=fsync                                %6.2f s  %v\n", d.Seconds(), dd)
	fmt.Printf("  dd + sha256sum                               %6.2f s  %v\n", ds.Seconds(), ddsum)
	fmt.Printf("  dd / installer                %5.2f (want >= 1)\n", d.Seconds()/o.Seconds())
	fmt.Printf("  (dd + sha256sum) / installer  %5.2f\n", ds.Seconds()/o.Seconds())
	return nil
}

// installOnce installs the bundle into slot B of a new disk image (A
// committed) and returns how long it took; with steps it prints when
// each step ended.
func installOnce(p func(string) string, size int64, pub ed25519.PublicKey, steps bool) (time.Duration, error) {
	mib := int(size>>20) + 2
	os.Remove(p("disk.img"))
	if err := diskimage.Build(p("disk.img"), diskimage.Spec{ESPSizeMiB: diskimage.MinESPSizeMiB, Partitions: []diskimage.PartSpec{
		{Label: slot.A.RootLabel(), Type: gpt.TypeRootX86_64, SizeMiB: 1, Attributes: slotstore.WithAttrs(0, slotstate.Attrs{Priority: 1, Successful: true})},
		{Label: slot.A.VerityLabel(), Type: gpt.TypeRootVerityX86_64, SizeMiB: 1},
		{Label: slot.B.RootLabel(), Type: gpt.TypeRootX86_64, SizeMiB: mib},
		{Label: slot.B.VerityLabel(), Type: gpt.TypeRootVerityX86_64, SizeMiB: mib/100 + 2},
	}}); err != nil {
		return 0, err
	}
	store, err := slotstore.NewGPT(p("disk.img"))
	if err != nil {
		return 0, err
	}
	os.RemoveAll(p("esp"))
	os.MkdirAll(p("esp/EFI/abboot"), 0o755)
	t := install.Target{Slot: slot.B, Running: slot.A, Store: store, ESPDir: p("esp"), Disk: p("disk.img")}

	benchutil.DropCaches()
	in, err := os.Open(p("b.abb"))
	if err != nil {
		return 0, err
	}
	defer in.Close()
	var o install.Options
	start := time.Now()
	if steps {
		o.Log = func(_ string, kv ...any) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == "step" {
					fmt.Printf("  first install: step %v done after %.2f s\n", kv[i+1], time.Since(start).Seconds())
				}
			}
		}
	}
	r, err := bundle.NewReader(in, bundle.Keyring{pub}, nil)
	if err != nil {
		return 0, err
	}
	if _, err := install.Install(r, t, o); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func randomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyN(f, rand.Reader, size)
	return err
}
