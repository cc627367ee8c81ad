package install

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/afero"

	"github.com/abboot/abboot/internal/powercut"
	"github.com/abboot/abboot/internal/testutil"
	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/delta"
	"github.com/abboot/abboot/pkg/diskimage"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/esp"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
	"github.com/abboot/abboot/pkg/uki"
	"github.com/abboot/abboot/pkg/verity"
)

const compatible = "abboot-test"

// version is one OS build: a root image with its verity tree (none for
// an ESP-only layout) and a real UKI whose command line names the root
// hash, and the signed bundle of them.
type version struct {
	name       string
	root, tree []byte
	rootHash   string // hex
	uki        []byte
	bundle     []byte
}

// newVersion builds a version with a root of rootBlocks 4 KiB blocks (0:
// ESP-only) and, when ukiHash is not "", a UKI that claims that root hash
// instead of its own.
func newVersion(t testing.TB, key ed25519.PrivateKey, name string, rootBlocks int, ukiHash string) *version {
	t.Helper()
	p, err := verity.NewParams()
	if err != nil {
		t.Fatal(err)
	}
	return makeVersion(t, key, name, random(rootBlocks*verity.DefaultBlockSize), p, ukiHash)
}

// makeVersion builds a version with root (none if empty), its tree made
// with p, and a UKI as newVersion's.
func makeVersion(t testing.TB, key ed25519.PrivateKey, name string, root []byte, p verity.Params, ukiHash string) *version {
	t.Helper()
	dir := t.TempDir()
	v := &version{name: name}
	if len(root) > 0 {
		v.root = root
		var tree testutil.MemFile
		h, err := verity.Format(bytes.NewReader(v.root), int64(len(v.root)), &tree, p)
		if err != nil {
			t.Fatal(err)
		}
		v.tree, v.rootHash = tree.B, hex.EncodeToString(h)
	}
	if ukiHash == "" {
		ukiHash = v.rootHash
	}
	cmdline := "console=ttyS0 panic=5"
	if ukiHash != "" {
		cmdline += " abboot.roothash=" + ukiHash
	}
	kernel, initrd := filepath.Join(dir, "kernel"), filepath.Join(dir, "initrd")
	os.WriteFile(kernel, random(5000), 0o644)
	os.WriteFile(initrd, random(7000), 0o644)
	out := filepath.Join(dir, "uki.efi")
	if err := uki.Build(uki.Spec{Kernel: kernel, Initrd: initrd, Cmdline: cmdline, OSRel: "VERSION_ID=" + name + "\n"}, out); err != nil {
		t.Fatal(err)
	}
	v.uki = readFile(t, out)
	v.pack(t, key)
	return v
}

// pack makes v's bundle of its root, tree and UKI, signed with key.
func (v *version) pack(t testing.TB, key ed25519.PrivateKey) {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{}
	for name, b := range map[string][]byte{bundle.PayloadRoot: v.root, bundle.PayloadVerity: v.tree, bundle.PayloadUKI: v.uki} {
		if len(b) == 0 {
			continue
		}
		files[name] = filepath.Join(dir, name)
		if err := os.WriteFile(files[name], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, bundle.Manifest{Version: v.name, Compatible: compatible, RootHash: v.rootHash}, files, key); err != nil {
		t.Fatal(err)
	}
	v.bundle = buf.Bytes()
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// uuids returns the DPS partition UUIDs of a hex root hash.
func uuids(rootHash string) (root, verity guid.GUID) {
	h, _ := hex.DecodeString(rootHash)
	return guid.FromBigEndian(h[:16]), guid.FromBigEndian(h[16:32])
}

// fixture is a machine: running slot A with version v1 (committed), slot
// B with v0 (committed earlier, the fallback), and v2 to install. With a
// root, the disk has ESP, abboot-root-a, abboot-verity-a, abboot-root-b,
// abboot-verity-b, and the state is in the GPT; ESP-only, the state is in
// an EFI variable. The ESP is a directory standing for the mounted ESP.
type fixture struct {
	withRoot   bool
	key        ed25519.PrivateKey
	keys       bundle.Keyring
	v0, v1, v2 *version
	known      map[string]string // sha256 of every complete UKI -> version
	base       *machine
	// urls, when set, has install fetch a version listed there by delta
	// (pkg/delta) from its URL, seeded from the machine's slots, instead
	// of reading its bundle.
	urls map[*version]string
}

// machine is one copy of the disk image, the ESP and the EFI variables.
type machine struct {
	dir                   string
	disk, espDir, varsDir string // disk "" when ESP-only
	// written, if set, is told of every write to the disk.
	written func(off, n int64)
}

const partMiB = 1

var initial = slotstate.State{A: slotstate.Attrs{Priority: 2, Successful: true}, B: slotstate.Attrs{Priority: 1, Successful: true}}

func newFixture(t testing.TB, withRoot bool) *fixture {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{withRoot: withRoot, key: key, keys: bundle.Keyring{key.Public().(ed25519.PublicKey)}, known: map[string]string{}}
	blocks := 0
	if withRoot {
		blocks = 16
	}
	f.v0, f.v1, f.v2 = newVersion(t, key, "0", blocks, ""), newVersion(t, key, "1", blocks, ""), newVersion(t, key, "2", blocks, "")
	for _, v := range []*version{f.v0, f.v1, f.v2} {
		f.known[sum(v.uki)] = v.name
	}
	m := &machine{dir: t.TempDir()}
	m.espDir, m.varsDir = filepath.Join(m.dir, "esp"), filepath.Join(m.dir, "vars")
	for _, d := range []string{m.espDir, m.varsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	espFiles := map[slot.Slot]*version{slot.A: f.v1, slot.B: f.v0}
	for s, v := range espFiles {
		m.writeESP(t, s.UKIPath(), v.uki)
	}
	m.writeESP(t, slot.FallbackPath, f.v1.uki)
	espPart := gpt.Partition{Number: 1, Type: gpt.TypeESP, UUID: guid.MustParse("e5900000-0000-4000-8000-000000000001"), FirstLBA: 2048, LastLBA: 2048 + 33<<11 - 1}
	if withRoot {
		m.disk = filepath.Join(m.dir, "disk.img")
		var parts []diskimage.PartSpec
		for _, s := range slot.All {
			v := espFiles[s]
			ru, vu := uuids(v.rootHash)
			img := func(name string, b []byte) string {
				p := filepath.Join(m.dir, name)
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
				return p
			}
			a := initial.Get(s)
			parts = append(parts,
				diskimage.PartSpec{Label: s.RootLabel(), Type: gpt.TypeRootX86_64, UUID: ru, Image: img("root-"+string(s), v.root), SizeMiB: partMiB,
					Attributes: slotstore.WithAttrs(0, a)},
				diskimage.PartSpec{Label: s.VerityLabel(), Type: gpt.TypeRootVerityX86_64, UUID: vu, Image: img("verity-"+string(s), v.tree), SizeMiB: partMiB})
		}
		if err := diskimage.Build(m.disk, diskimage.Spec{ESPSizeMiB: diskimage.MinESPSizeMiB, Partitions: parts}); err != nil {
			t.Fatal(err)
		}
		tab, err := gpt.ReadFile(m.disk)
		if err != nil {
			t.Fatal(err)
		}
		espPart = tab.Partitions[0]
	} else if err := slotstore.NewVar(efivar.Open(m.varsDir)).Save(initial); err != nil {
		t.Fatal(err)
	}
	vars := efivar.Open(m.varsDir)
	if _, err := bootentry.Repair(vars, map[uint16]*efivar.LoadOption{}, &esp.ESP{Part: espPart, SectorSize: 512}, slot.All); err != nil {
		t.Fatal(err)
	}
	f.base = m
	if st, err := m.store(t, nil).Load(); err != nil || st != initial {
		t.Fatalf("fixture state %+v, %v; want %+v", st, err, initial)
	}
	return f
}

func (m *machine) writeESP(t testing.TB, name string, b []byte) {
	t.Helper()
	p := filepath.Join(m.espDir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// clone copies the machine into a new directory.
func (m *machine) clone(t testing.TB) *machine {
	t.Helper()
	c := &machine{dir: t.TempDir()}
	c.espDir, c.varsDir = filepath.Join(c.dir, "esp"), filepath.Join(c.dir, "vars")
	if err := os.CopyFS(c.espDir, os.DirFS(m.espDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(c.varsDir, os.DirFS(m.varsDir)); err != nil {
		t.Fatal(err)
	}
	if m.disk != "" {
		c.disk = filepath.Join(c.dir, "disk.img")
		sparseCopy(t, m.disk, c.disk)
	}
	return c
}

// sparseCopy copies a mostly empty disk image, skipping zero blocks.
func sparseCopy(t testing.TB, from, to string) {
	t.Helper()
	src := readFile(t, from)
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := dst.Truncate(int64(len(src))); err != nil {
		t.Fatal(err)
	}
	const bs = 64 << 10
	zero := make([]byte, bs)
	for off := 0; off < len(src); off += bs {
		b := src[off:min(off+bs, len(src))]
		if !bytes.Equal(b, zero[:len(b)]) {
			if _, err := dst.WriteAt(b, int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// store returns the machine's state store, its writes through pw (nil:
// never cut).
func (m *machine) store(t testing.TB, pw *powercut.Power) slotstore.Store {
	t.Helper()
	if m.disk == "" {
		return slotstore.NewVar(efivar.OpenFS(pw.FS(afero.NewBasePathFs(afero.NewOsFs(), m.varsDir))))
	}
	dev := m.device(t, pw)
	s, err := slotstore.NewGPTFile(dev, m.disk, dev.size)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// device opens the disk image with writes through pw.
func (m *machine) device(t testing.TB, pw *powercut.Power) *cutDev {
	t.Helper()
	f, err := os.OpenFile(m.disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return &cutDev{File: powercut.File{File: f, P: pw}, size: fi.Size(), written: m.written}
}

// target is the install target for slot s on the machine, every write
// through pw; the disk is opened once and shared with the store, as a
// power cut hits both.
func (m *machine) target(t testing.TB, s slot.Slot, pw *powercut.Power) Target {
	t.Helper()
	tg := Target{Slot: s, Running: s.Other(), ESPDir: m.espDir, ESP: pw.FS(afero.NewBasePathFs(afero.NewOsFs(), m.espDir))}
	if m.disk == "" {
		tg.Store = m.store(t, pw)
		return tg
	}
	dev := m.device(t, pw)
	st, err := slotstore.NewGPTFile(dev, m.disk, dev.size)
	if err != nil {
		t.Fatal(err)
	}
	tg.Store, tg.Disk = st, m.disk
	tg.OpenDisk = func() (Device, error) { return dev, nil }
	return tg
}

// install installs v into slot B of the machine.
func (f *fixture) install(t testing.TB, m *machine, v *version, pw *powercut.Power, o Options) (Result, error) {
	t.Helper()
	tg := m.target(t, slot.B, pw)
	sizes, err := SlotSizes(tg)
	if err != nil {
		return Result{}, err
	}
	var src io.Reader = bytes.NewReader(v.bundle)
	var ds *delta.Source
	if u, ok := f.urls[v]; ok {
		if ds, err = delta.Open(context.Background(), u, delta.Options{}); err != nil {
			return Result{}, err
		}
		defer ds.Close()
		src = ds
	}
	r, err := bundle.NewReader(src, f.keys, bundle.Policy(compatible, "1", bundle.SlotSizes(sizes)))
	if err != nil {
		return Result{}, err
	}
	if ds != nil {
		seeds, c, err := delta.SlotSeeds(m.disk, slot.A, slot.B)
		if err != nil {
			return Result{}, err
		}
		defer c.Close()
		if err := ds.Plan(r, seeds); err != nil {
			return Result{}, err
		}
		o.InPlace = ds.InPlace
	}
	return Install(r, tg, o)
}

// complete reports why slot s of the machine could not come up, nil when
// it can: its UKI is one of the complete images built, and when its
// command line names a root hash, a disk partition pair carries that
// hash's UUIDs, labelled as s's, and passes a full verity check. This is
// what abboot's init does (uinit/root.go), and more.
func (f *fixture) complete(m *machine, s slot.Slot) error {
	b, err := os.ReadFile(filepath.Join(m.espDir, s.UKIPath()))
	if err != nil {
		return err
	}
	if _, ok := f.known[sum(b)]; !ok {
		return fmt.Errorf("%s is not a complete UKI (%d bytes)", s.UKIPath(), len(b))
	}
	img, err := uki.Read(bytes.NewReader(b), ".cmdline")
	if err != nil {
		return err
	}
	p, err := bootparam.Parse(string(bytes.TrimRight(img.Sections[".cmdline"], "\x00")))
	if err != nil {
		return err
	}
	if p.RootHash == "" {
		return nil
	}
	if m.disk == "" {
		return errors.New("root hash but no disk")
	}
	tab, err := gpt.ReadFile(m.disk)
	if err != nil {
		return err
	}
	ru, vu := uuids(p.RootHash)
	rp, ok1 := tab.ByUUID(ru)
	vp, ok2 := tab.ByUUID(vu)
	if !ok1 || !ok2 {
		return fmt.Errorf("no partitions with the UUIDs of root hash %s", p.RootHash)
	}
	if rp.Name != s.RootLabel() || vp.Name != s.VerityLabel() {
		return fmt.Errorf("root hash %s is on %s and %s", p.RootHash, rp.Name, vp.Name)
	}
	disk, err := os.Open(m.disk)
	if err != nil {
		return err
	}
	defer disk.Close()
	h, _ := hex.DecodeString(p.RootHash)
	ss := tab.SectorSize
	return verity.Verify(io.NewSectionReader(disk, rp.Start(ss), rp.Size(ss)), rp.Size(ss),
		io.NewSectionReader(disk, vp.Start(ss), vp.Size(ss)), h, verity.Params{})
}
