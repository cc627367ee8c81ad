package main

import (
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/measure"
	"github.com/abboot/abboot/pkg/secureboot"
	"github.com/abboot/abboot/pkg/uki"
)

// TestSignedUKI makes a key set and a signed UKI around Debian's signed
// kernel with the built abimage, then checks with sbverify (interop) that
// the UKI and the kernel inside it pass `--cert db.pem`, and that the
// kernel carries our signature only: Debian's was removed, since the
// kernel's kexec check reads the first signature alone.
func TestSignedUKI(t *testing.T) {
	kernels, _ := filepath.Glob(filepath.Join(os.Getenv("HOME"), ".cache/abboot/kernel/*/root/boot/vmlinuz-*"))
	if os.Getenv("ABBOOT_TEST_KERNEL") != "" {
		kernels = []string{os.Getenv("ABBOOT_TEST_KERNEL")}
	}
	if len(kernels) == 0 {
		t.Skip("no Debian kernel: run ./mkuimage.sh once or set ABBOOT_TEST_KERNEL")
	}
	if _, err := exec.LookPath("sbverify"); err != nil {
		t.Skip("sbverify not installed (apt-get install sbsigntool)")
	}
	dir := t.TempDir()
	bin := buildAbimage(t, dir)
	p := func(name string) string { return filepath.Join(dir, name) }

	if _, err := runAbimage(t, bin, "sbkeys", "-o", p("keys")); err != nil {
		t.Fatal(err)
	}
	if _, err := runAbimage(t, bin, "sbkeys", "-o", p("keys")); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("sbkeys over an existing key set: %v", err)
	}
	writeFile(t, p("initrd"), []byte("initrd"))
	if _, err := runAbimage(t, bin, "uki", "--kernel", kernels[0], "--initrd", p("initrd"), "--cmdline", "console=ttyS0",
		"--sb-keys", p("keys"), "-o", p("signed.efi")); err != nil {
		t.Fatal(err)
	}
	img, err := uki.ReadFile(p("signed.efi"), ".linux")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("linux"), img.Sections[".linux"])
	for _, f := range []string{"signed.efi", "linux"} {
		if out, err := exec.Command("sbverify", "--cert", p("keys/db.pem"), p(f)).CombinedOutput(); err != nil {
			t.Errorf("sbverify --cert db.pem %s: %v\n%s", f, err, out)
		}
	}
	out, err := exec.Command("sbverify", "--list", p("linux")).CombinedOutput()
	if err != nil || len(regexp.MustCompile(`(?m)^signature \d+$`).FindAll(out, -1)) != 1 || !strings.Contains(string(out), "abboot db") {
		t.Errorf("the kernel's signatures are not ours alone: %v\n%s", err, out)
	}
	ks, err := secureboot.LoadKeySet(p("keys"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p("signed.efi"))
	if err != nil {
		t.Fatal(err)
	}
	db := &secureboot.Database{Certs: []*x509.Certificate{ks.DB.Cert}}
	if _, err := secureboot.Verify(b, db, nil); err != nil {
		t.Errorf("Verify: %v", err)
	}

	// sign re-signs: a UKI signed by another key set verifies only
	// against the new one.
	if _, err := runAbimage(t, bin, "sbkeys", "-o", p("other")); err != nil {
		t.Fatal(err)
	}
	if _, err := runAbimage(t, bin, "sign", "--sb-keys", p("other"), "-o", p("resigned.efi"), p("signed.efi")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sbverify", "--cert", p("keys/db.pem"), p("resigned.efi")).CombinedOutput(); err == nil {
		t.Errorf("the old signature survived re-signing:\n%s", out)
	}
	if out, err := exec.Command("sbverify", "--cert", p("other/db.pem"), p("resigned.efi")).CombinedOutput(); err != nil {
		t.Errorf("sbverify after sign: %v\n%s", err, out)
	}
}

// TestPCR11 checks the pcr11 command's two paths: a firmware boot and a
// kexec handover, which must differ.
func TestPCR11(t *testing.T) {
	dir := t.TempDir()
	bin := buildAbimage(t, dir)
	a := testUKI(t, dir, "a.efi", "a", "VERSION_ID=1\n")
	b := testUKI(t, dir, "b.efi", "b", "VERSION_ID=2\n")
	img := func(p string) *uki.Image {
		i, err := measure.ReadImage(p)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	for _, tc := range []struct {
		args []string
		want [32]byte
	}{
		{[]string{b}, measure.Predict(img(b))},
		{[]string{a, b}, measure.Predict(img(a), img(b))},
	} {
		out, err := runAbimage(t, bin, append([]string{"pcr11"}, tc.args...)...)
		if err != nil || strings.TrimSpace(out) != fmt.Sprintf("%x", tc.want) {
			t.Errorf("pcr11 %v: %q, %v; want %x", tc.args, out, err, tc.want)
		}
	}
}
