package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/uki"
)

// buildAbimage builds this command into dir.
func buildAbimage(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "abimage")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building abimage: %v\n%s", err, out)
	}
	return bin
}

// runAbimage runs bin and returns its stdout and, on failure, its one
// line of stderr.
func runAbimage(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := stderr.String()
		if strings.Count(msg, "\n") != 1 {
			t.Errorf("abimage %s: stderr is not one line: %q", strings.Join(args, " "), msg)
		}
		return stdout.String(), errors.New(strings.TrimSpace(msg))
	}
	return stdout.String(), nil
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// testUKI builds a UKI with the given command line and os-release around
// a stand-in kernel (the bundle never runs it).
func testUKI(t *testing.T, dir, name, cmdline, osrel string) string {
	t.Helper()
	if _, err := os.Stat(uki.DefaultStub); err != nil {
		t.Fatalf("no UEFI stub: apt-get install systemd-boot-efi (%v)", err)
	}
	out := filepath.Join(dir, name)
	err := uki.Build(uki.Spec{
		Kernel:  writeFile(t, filepath.Join(dir, name+".kernel"), bytes.Repeat([]byte("kernel"), 1000)),
		Initrd:  writeFile(t, filepath.Join(dir, name+".initrd"), bytes.Repeat([]byte("initrd"), 1000)),
		Cmdline: cmdline,
		OSRel:   osrel,
	}, out)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBundleCLI makes keys and bundles with the built abimage, as a build
// pipeline would (verity format, uki, keygen, bundle), and reads them back
// with the package's streaming reader.
func TestBundleCLI(t *testing.T) {
	dir := t.TempDir()
	bin := buildAbimage(t, dir)
	p := func(name string) string { return filepath.Join(dir, name) }

	out, err := runAbimage(t, bin, "keygen", "-o", p("k"))
	if err != nil || !strings.Contains(out, "wrote "+p("k.key")) {
		t.Fatalf("keygen: %v, %q", err, out)
	}
	if fi, err := os.Stat(p("k.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("k.key: %v, mode %v, want 0600", err, fi.Mode())
	}
	key := readFile(t, p("k.key"))
	if _, err := runAbimage(t, bin, "keygen", "-o", p("k")); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("keygen over an existing key: %v", err)
	}
	if again := readFile(t, p("k.key")); !bytes.Equal(again, key) {
		t.Fatal("keygen overwrote an existing key")
	}
	if _, err := runAbimage(t, bin, "keygen", "-o", p("other")); err != nil {
		t.Fatal(err)
	}

	root := make([]byte, 16*4096)
	for i := range root {
		root[i] = byte(i * 7 / 4096)
	}
	writeFile(t, p("root.img"), root)
	out, err = runAbimage(t, bin, "verity", "format", p("root.img"), p("verity.img"))
	if err != nil {
		t.Fatal(err)
	}
	rootHash := strings.TrimSpace(out)
	bad := bytes.Clone(root)
	bad[5000] ^= 1
	writeFile(t, p("bad-root.img"), bad)
	const osrel = "ID=abboot\nVERSION_ID=2\n"
	withRoot := testUKI(t, dir, "a.efi", "abboot.roothash="+rootHash+" panic=10", osrel)
	espOnly := testUKI(t, dir, "esp.efi", "panic=10", osrel)
	noOSRel := testUKI(t, dir, "noosrel.efi", "panic=10", "")

	// Trust both keys, as a trust file of concatenated .pub files.
	pubs := append(readFile(t, p("other.pub")), readFile(t, p("k.pub"))...)
	trust := writeFile(t, p("trust.pub"), pubs)

	for _, tt := range []struct {
		name  string
		args  []string
		files map[string]string
	}{
		{"root", []string{"--root", p("root.img"), "--verity", p("verity.img"), "--uki", withRoot, "--roothash", rootHash},
			map[string]string{"root": p("root.img"), "verity": p("verity.img"), "uki": withRoot}},
		{"esp-only", []string{"--uki", espOnly, "--version", "2"}, map[string]string{"uki": espOnly}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			abb := p(tt.name + ".abb")
			args := append([]string{"bundle", "--key", p("k.key"), "--compatible", "abboot-test", "-o", abb}, tt.args...)
			if _, err := runAbimage(t, bin, args...); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(abb)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			keys, err := bundle.LoadKeys(trust)
			if err != nil {
				t.Fatal(err)
			}
			r, err := bundle.NewReader(f, keys, bundle.Policy("abboot-test", "1"))
			if err != nil {
				t.Fatal(err)
			}
			if r.Manifest.Version != "2" || r.Manifest.RootHash != map[bool]string{true: rootHash}[tt.files["root"] != ""] || r.Manifest.Created == "" {
				t.Errorf("manifest %+v", r.Manifest)
			}
			got := map[string]string{}
			for {
				pl, pr, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(pr)
				if err != nil {
					t.Fatal(err)
				}
				if want := readFile(t, tt.files[pl.Name]); !bytes.Equal(b, want) {
					t.Errorf("payload %s differs from %s", pl.Name, tt.files[pl.Name])
				}
				got[pl.Name] = tt.files[pl.Name]
			}
			if len(got) != len(tt.files) {
				t.Errorf("payloads %v, want %v", got, tt.files)
			}

			f.Seek(0, io.SeekStart)
			only, err := bundle.LoadKeys(p("other.pub"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bundle.NewReader(f, only, nil); !errors.Is(err, bundle.ErrUnknownKey) {
				t.Errorf("reading with only the other key: %v, want %v", err, bundle.ErrUnknownKey)
			}
		})
	}

	// Refusals: one line, and no bundle left behind.
	base := []string{"bundle", "--key", p("k.key"), "--compatible", "abboot-test", "-o", p("refused.abb")}
	rootArgs := []string{"--root", p("root.img"), "--verity", p("verity.img"), "--uki", withRoot}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"roothash differs from the UKI", append(rootArgs, "--roothash", strings.Repeat("0", 64)), "but the command line of"},
		{"version differs from the UKI", append(rootArgs, "--version", "3"), "VERSION_ID=2"},
		{"root does not verify", []string{"--root", p("bad-root.img"), "--verity", p("verity.img"), "--uki", withRoot}, "does not match"},
		{"UKI wants a root", []string{"--uki", withRoot}, "no --root and --verity"},
		{"root without verity", []string{"--root", p("root.img"), "--uki", withRoot}, "come together"},
		{"root for a UKI without roothash", []string{"--root", p("root.img"), "--verity", p("verity.img"), "--uki", espOnly}, "has no abboot.roothash"},
		{"not a UKI", []string{"--uki", p("root.img")}, "no .cmdline section"},
		{"no version", []string{"--uki", noOSRel}, "no --version"},
		{"public key to sign", []string{"--uki", espOnly, "--key", p("k.pub")}, `"PUBLIC KEY"`},
		{"bad compatible", []string{"--uki", espOnly, "--compatible", "a b"}, "compatible string"},
		{"no uki", nil, "usage"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runAbimage(t, bin, append(base, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("abimage bundle: %v, want an error with %q", err, tt.want)
			}
			ents, _ := filepath.Glob(p("*refused.abb*"))
			if len(ents) != 0 {
				t.Fatalf("left behind %v", ents)
			}
		})
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
