package dm

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/tool"
	"github.com/abboot/abboot/pkg/verity"
)

func mustHex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTable(t *testing.T) {
	root := "4392712ba01368efdf14b05c76f9e4df0d53664630b5d48632ed17a137f39076"
	for _, tc := range []struct {
		name    string
		v       Verity
		want    string
		sectors uint64
	}{{
		// The example in verity.rst (Example), whose dmsetup line is
		// "0 2097152 verity <this>".
		name: "verity.rst",
		v: Verity{DataDev: "/dev/sda1", HashDev: "/dev/sda2", DataBlockSize: 4096, HashBlockSize: 4096,
			DataBlocks: 262144, HashStart: 1, Algorithm: "sha256", RootHash: mustHex(t, root),
			Salt: mustHex(t, "1234000000000000000000000000000000000000000000000000000000000000")},
		want:    "1 /dev/sda1 /dev/sda2 4096 4096 262144 1 sha256 " + root + " 1234000000000000000000000000000000000000000000000000000000000000",
		sectors: 2097152,
	}, {
		name: "no salt, ignore corruption, 1 KiB data blocks",
		v: Verity{DataDev: "/dev/vda2", HashDev: "/dev/vda3", DataBlockSize: 1024, HashBlockSize: 4096,
			DataBlocks: 10, HashStart: 1, Algorithm: "sha256", RootHash: mustHex(t, root), OnCorruption: IgnoreCorruption},
		want:    "1 /dev/vda2 /dev/vda3 1024 4096 10 1 sha256 " + root + " - 1 ignore_corruption",
		sectors: 20,
	}, {
		name: "restart",
		v: Verity{DataDev: "7:0", HashDev: "7:1", DataBlockSize: 4096, HashBlockSize: 4096,
			DataBlocks: 1, Algorithm: "sha256", RootHash: []byte{0xab}, Salt: []byte{1}, OnCorruption: RestartOnCorruption},
		want:    "1 7:0 7:1 4096 4096 1 0 sha256 ab 01 1 restart_on_corruption",
		sectors: 8,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.v.Table(); got != tc.want {
				t.Errorf("Table() = %q, want %q", got, tc.want)
			}
			if got := tc.v.Sectors(); got != tc.sectors {
				t.Errorf("Sectors() = %d, want %d", got, tc.sectors)
			}
			if err := tc.v.check(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	good := Verity{Name: "abboot-test", DataDev: "/dev/null", HashDev: "/dev/null", DataBlockSize: 4096,
		HashBlockSize: 4096, DataBlocks: 1, HashStart: 1, Algorithm: "sha256", RootHash: []byte{1}}
	for _, tc := range []struct {
		name string
		edit func(v *Verity)
	}{
		{"no name", func(v *Verity) { v.Name = "" }},
		{"slash in name", func(v *Verity) { v.Name = "a/b" }},
		{"dot name", func(v *Verity) { v.Name = ".." }},
		{"long name", func(v *Verity) { v.Name = strings.Repeat("n", 128) }},
		{"space in device", func(v *Verity) { v.DataDev = "/dev/a b" }},
		{"no hash device", func(v *Verity) { v.HashDev = "" }},
		{"no algorithm", func(v *Verity) { v.Algorithm = "" }},
		{"block size not a power of two", func(v *Verity) { v.DataBlockSize = 3000 }},
		{"block size too small", func(v *Verity) { v.HashBlockSize = 256 }},
		{"no data blocks", func(v *Verity) { v.DataBlocks = 0 }},
		{"too many data blocks", func(v *Verity) { v.DataBlocks = 1 << 60 }},
		{"no root hash", func(v *Verity) { v.RootHash = nil }},
		{"unknown corruption mode", func(v *Verity) { v.OnCorruption = "reboot" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := good
			tc.edit(&v)
			// These fail before the control node is opened, so they
			// need neither root nor device-mapper.
			if _, err := Create(v); err == nil || strings.Contains(err.Error(), "device-mapper is not available") {
				t.Errorf("Create: %v", err)
			}
		})
	}
	if err := good.check(); err != nil {
		t.Errorf("good: %v", err)
	}
}

// randomFile writes n random bytes to a new file in dir.
func randomFile(t testing.TB, dir string, n int) (string, []byte) {
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(dir, "data")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestVerityFromSuperblock(t *testing.T) {
	dir := t.TempDir()
	data, b := randomFile(t, dir, 64<<10)
	p := verity.Params{DataBlockSize: 1024, HashBlockSize: 4096, Salt: []byte{0xde, 0xad}}
	hashPath := filepath.Join(dir, "hash")
	hf, err := os.Create(hashPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	root, err := verity.Format(bytes.NewReader(b), int64(len(b)), hf, p)
	if err != nil {
		t.Fatal(err)
	}
	v, err := VerityFromSuperblock(data, hashPath, root)
	if err != nil {
		t.Fatal(err)
	}
	v.Name = "abboot-root-a"
	want := Verity{Name: "abboot-root-a", DataDev: data, HashDev: hashPath, DataBlocks: 64, HashStart: 1,
		DataBlockSize: 1024, HashBlockSize: 4096, Algorithm: "sha256", RootHash: root, Salt: []byte{0xde, 0xad},
		OnCorruption: RestartOnCorruption}
	if v.Table() != want.Table() || v.Name != want.Name || v.UUID != "" {
		t.Errorf("got %+v\nwant %+v", v, want)
	}

	if _, err := VerityFromSuperblock(data, data, root); err == nil || !strings.Contains(err.Error(), "no verity superblock") {
		t.Errorf("random data as hash device: %v", err)
	}
	if _, err := VerityFromSuperblock(data, filepath.Join(dir, "missing"), root); err == nil {
		t.Error("missing hash device accepted")
	}
}

// TestVerityFromVeritysetup reads what `veritysetup format` writes and
// checks every table field against `veritysetup dump`.
func TestVerityFromVeritysetup(t *testing.T) {
	if _, err := tool.Path("veritysetup"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data, _ := randomFile(t, dir, 40<<10)
	hashPath := filepath.Join(dir, "hash")
	out, err := tool.Run("veritysetup", "format", "--data-block-size=1024", "--hash-block-size=2048", data, hashPath)
	if err != nil {
		t.Fatal(err)
	}
	field := func(out []byte, key string) string {
		m := regexp.MustCompile(`(?m)^` + key + `:\s*(\S+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("no %q in veritysetup output:\n%s", key, out)
		}
		return string(m[1])
	}
	root := mustHex(t, field(out, "Root hash"))
	v, err := VerityFromSuperblock(data, hashPath, root)
	if err != nil {
		t.Fatal(err)
	}
	dump, err := tool.Run("veritysetup", "dump", hashPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks, _ := strconv.ParseUint(field(dump, "Data blocks"), 10, 64)
	want := Verity{DataDev: data, HashDev: hashPath, DataBlocks: blocks, HashStart: 1,
		DataBlockSize: 1024, HashBlockSize: 2048, Algorithm: field(dump, "Hash algorithm"),
		RootHash: root, Salt: mustHex(t, field(dump, "Salt")), OnCorruption: RestartOnCorruption}
	if blocks != 40 || field(dump, "Data block size") != "1024" || field(dump, "Hash block size") != "2048" {
		t.Errorf("veritysetup dump disagrees with the format options:\n%s", dump)
	}
	if v.Table() != want.Table() {
		t.Errorf("table %q\nwant  %q", v.Table(), want.Table())
	}
}
