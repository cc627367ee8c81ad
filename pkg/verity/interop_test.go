package verity

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/abboot/abboot/internal/testutil"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/tool"
)

// These tests run the real veritysetup (Debian cryptsetup-bin) on plain
// files; it needs no root for format and verify.

func veritysetup(t *testing.T, args ...string) (string, error) {
	t.Helper()
	p, err := tool.Path("veritysetup")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	return string(out), err
}

// vsParams turns p into veritysetup's flags.
func vsParams(p Params) []string {
	salt := "-"
	if len(p.Salt) > 0 {
		salt = hex.EncodeToString(p.Salt)
	}
	a := []string{"--salt", salt, "--data-block-size", strconv.Itoa(p.DataBlockSize), "--hash-block-size", strconv.Itoa(p.HashBlockSize)}
	if p.NoSuperblock {
		return append(a, "--no-superblock")
	}
	return append(a, "--uuid", p.UUID.String())
}

var rootLine = regexp.MustCompile(`(?m)^Root hash:\s+([0-9a-f]{64})$`)

// vsFormat runs veritysetup format with args and returns the root hash it
// printed.
func vsFormat(t *testing.T, args ...string) string {
	t.Helper()
	out, err := veritysetup(t, append([]string{"format"}, args...)...)
	if err != nil {
		t.Fatalf("veritysetup format: %v\n%s", err, out)
	}
	m := rootLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no root hash in veritysetup's output:\n%s", out)
	}
	return m[1]
}

type interopCase struct {
	blocks int
	p      Params
}

func interopCases() []interopCase {
	u := guid.MustParse("0b7e2a63-5d1c-4f38-9a0e-6b1d2c3e4f50")
	salt := []byte("abboot verity interop salt 32 by")
	var cs []interopCase
	for _, n := range []int{1, 2, 127, 128, 129, 300} {
		for _, sb := range []bool{false, true} {
			cs = append(cs, interopCase{n, Params{DataBlockSize: 4096, HashBlockSize: 4096, Salt: salt, UUID: u, NoSuperblock: sb}})
		}
	}
	return append(cs,
		// 512-byte hash blocks give a four-level tree from 2 MiB.
		interopCase{600, Params{DataBlockSize: 4096, HashBlockSize: 512, Salt: salt, UUID: u}},
		interopCase{600, Params{DataBlockSize: 1024, HashBlockSize: 512, Salt: salt[:5], NoSuperblock: true}},
		// Runs of 128 digests that do not fill a 64 KiB hash block.
		interopCase{600, Params{DataBlockSize: 4096, HashBlockSize: 65536, Salt: salt, UUID: u}},
		// The largest blocks cryptsetup accepts: one block per run.
		interopCase{5, Params{DataBlockSize: 512 << 10, HashBlockSize: 512 << 10, Salt: salt, NoSuperblock: true}},
		// No salt at all.
		interopCase{129, Params{DataBlockSize: 4096, HashBlockSize: 4096, UUID: u}},
	)
}

func (c interopCase) String() string {
	return fmt.Sprintf("%dx%d-hash%d-salt%d-nosb=%v", c.blocks, c.p.DataBlockSize, c.p.HashBlockSize, len(c.p.Salt), c.p.NoSuperblock)
}

// TestInterop builds each tree with Format and with veritysetup format
// given the same salt and uuid, and checks that the files and root hashes
// are identical and that veritysetup verify accepts ours.
func TestInterop(t *testing.T) {
	for _, c := range interopCases() {
		t.Run(c.String(), func(t *testing.T) {
			dir := t.TempDir()
			data, ours, theirs := filepath.Join(dir, "data"), filepath.Join(dir, "ours"), filepath.Join(dir, "theirs")
			d := randomData(c.blocks, c.p.DataBlockSize)
			if err := os.WriteFile(data, d, 0o644); err != nil {
				t.Fatal(err)
			}
			h := &testutil.MemFile{}
			root, err := Format(bytes.NewReader(d), int64(len(d)), h, c.p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(ours, h.B, 0o644); err != nil {
				t.Fatal(err)
			}
			if got, want := hex.EncodeToString(root), vsFormat(t, append([]string{data, theirs}, vsParams(c.p)...)...); got != want {
				t.Errorf("root hash %s, veritysetup %s", got, want)
			}
			tb, err := os.ReadFile(theirs)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(h.B, tb) {
				t.Errorf("hash files differ: ours %d bytes, veritysetup's %d", len(h.B), len(tb))
			}
			if want, err := TreeSize(int64(len(d)), c.p); err != nil || want != int64(len(tb)) {
				t.Errorf("TreeSize = %d, %v; veritysetup wrote %d bytes", want, err, len(tb))
			}
			if out, err := veritysetup(t, append([]string{"verify", data, ours, hex.EncodeToString(root)}, vsParams(c.p)...)...); err != nil {
				t.Errorf("veritysetup verify of our tree: %v\n%s", err, out)
			}
		})
	}
}

// TestVerifyVeritysetupTree lets veritysetup choose salt and uuid, as it
// does by default, and checks that Verify accepts its tree from the
// superblock alone.
func TestVerifyVeritysetupTree(t *testing.T) {
	for _, n := range []int{1, 129, 1100} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			dir := t.TempDir()
			data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
			d := randomData(n, 4096)
			if err := os.WriteFile(data, d, 0o644); err != nil {
				t.Fatal(err)
			}
			root, err := ParseRootHash(vsFormat(t, data, hash))
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(hash)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sb, err := ReadSuperblock(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(sb.Salt) != DefaultSaltSize || sb.UUID.IsZero() || sb.DataBlocks != uint64(n) {
				t.Errorf("superblock %+v: want a %d-byte salt, a uuid and %d blocks", sb, DefaultSaltSize, n)
			}
			if err := Verify(bytes.NewReader(d), int64(len(d)), f, root, Params{}); err != nil {
				t.Errorf("Verify: %v", err)
			}
			root[0] ^= 1
			if err := Verify(bytes.NewReader(d), int64(len(d)), f, root, Params{}); err == nil {
				t.Errorf("Verify with a wrong root hash succeeded")
			}
		})
	}
}

// TestCorruptionCaughtByBoth flips one byte at a time in the data or the
// tree and checks that veritysetup verify and Verify both reject it, and
// that Verify names the block that holds the byte.
func TestCorruptionCaughtByBoth(t *testing.T) {
	const bs = 4096
	p := Params{DataBlockSize: bs, HashBlockSize: bs, Salt: []byte{0xab, 0xcd}, UUID: guid.MustParse("0b7e2a63-5d1c-4f38-9a0e-6b1d2c3e4f50")}
	d := randomData(300, bs) // levels: 3 hash blocks, then 1 top block
	h := &testutil.MemFile{}
	root, err := Format(bytes.NewReader(d), int64(len(d)), h, p)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	for _, tc := range []struct {
		name string
		hash bool  // flip in the hash file, else in the data
		off  int64 // byte flipped
		want MismatchError
	}{
		{"first data block", false, 0, MismatchError{Device: "data", Block: 0}},
		{"data block 129", false, 129*bs + 1234, MismatchError{Device: "data", Block: 129, Offset: 129 * bs}},
		{"last data byte", false, 300*bs - 1, MismatchError{Device: "data", Block: 299, Offset: 299 * bs}},
		{"top hash block", true, bs + 40, MismatchError{Device: "hash", Level: 1, Block: 1, Offset: bs, Root: true}},
		{"level-0 digest", true, 3*bs + 32*5, MismatchError{Device: "hash", Level: 0, Block: 3, Offset: 3 * bs}},
		{"level-0 padding", true, 5*bs - 1, MismatchError{Device: "hash", Level: 0, Block: 4, Offset: 4 * bs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dd, hh := bytes.Clone(d), bytes.Clone(h.B)
			b := dd
			if tc.hash {
				b = hh
			}
			b[tc.off] ^= 0x10
			if err := os.WriteFile(data, dd, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(hash, hh, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := veritysetup(t, "verify", data, hash, hex.EncodeToString(root)); err == nil {
				t.Errorf("veritysetup verify accepted the corruption:\n%s", out)
			}
			err := Verify(bytes.NewReader(dd), int64(len(dd)), bytes.NewReader(hh), root, Params{})
			var me *MismatchError
			if !errors.As(err, &me) || *me != tc.want {
				t.Errorf("Verify = %v, want %v", err, &tc.want)
			}
		})
	}
}
