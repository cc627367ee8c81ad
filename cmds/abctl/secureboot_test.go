package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/secureboot"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/uki"
)

// putESP copies data into the image's ESP at path, with mtools.
func (im *image) putESP(path string, data []byte) {
	im.t.Helper()
	src := filepath.Join(im.t.TempDir(), "f")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		im.t.Fatal(err)
	}
	tbl, err := gpt.ReadFile(im.disk)
	if err != nil {
		im.t.Fatal(err)
	}
	img := fmt.Sprintf("%s@@%d", im.disk, tbl.ByType(gpt.TypeESP)[0].Start(tbl.SectorSize))
	exec.Command("mmd", "-i", img, "::EFI", "::EFI/abboot").Run() // may exist
	if out, err := exec.Command("mcopy", "-o", "-i", img, src, "::"+path).CombinedOutput(); err != nil {
		im.t.Fatalf("mcopy: %v\n%s", err, out)
	}
}

// TestSecureBoot enrolls keys into a variables directory in setup mode,
// refuses to enroll again (user mode), and has status say, per slot,
// whether the firmware would run its UKI.
func TestSecureBoot(t *testing.T) {
	stub, err := os.ReadFile(uki.DefaultStub)
	if err != nil {
		t.Skipf("%v (apt-get install systemd-boot-efi)", err)
	}
	ks, err := secureboot.GenerateKeySet("abctl test")
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	files, err := ks.Files()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f.Name, ".auth") { // the device gets only these
			os.WriteFile(filepath.Join(keys, f.Name), f.Data, f.Mode)
		}
	}
	im := newImage(t)
	vars := efivar.Open(im.vars)
	set := func(name string, v byte) {
		if err := vars.Set(name, efivar.GlobalVariable, efivar.AttrBootserviceAccess|efivar.AttrRuntimeAccess, []byte{v}); err != nil {
			t.Fatal(err)
		}
	}
	set("SetupMode", 1)
	set("SecureBoot", 0)
	if out, err := im.abctl("secureboot", "enroll", keys); err != nil {
		t.Fatalf("enroll in setup mode: %v\n%s", err, out)
	}
	for _, v := range []string{"PK-8be4df61-93ca-11d2-aa0d-00e098032b8c", "KEK-8be4df61-93ca-11d2-aa0d-00e098032b8c", "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f"} {
		if _, err := os.Stat(filepath.Join(im.vars, v)); err != nil {
			t.Errorf("enroll did not write %s: %v", v, err)
		}
	}

	// The firmware after the next boot: user mode, Secure Boot on, and
	// db as GetVariable returns it, without the authentication header.
	set("SetupMode", 0)
	set("SecureBoot", 1)
	if err := vars.Set("db", secureboot.ImageSecurityDatabase, 0x27, secureboot.MarshalCerts(secureboot.Owner, ks.DB.Cert)); err != nil {
		t.Fatal(err)
	}
	out, err := im.abctl("secureboot", "enroll", keys)
	if err == nil || !strings.Contains(out, "not in Secure Boot setup mode") || strings.Count(out, "\n") != 1 {
		t.Errorf("enroll in user mode: %v, %q; want one line refusing", err, out)
	}

	signed, err := secureboot.Sign(stub, ks.DB)
	if err != nil {
		t.Fatal(err)
	}
	im.putESP(slot.A.UKIPath(), signed)
	im.putESP(slot.B.UKIPath(), stub)
	sb := im.status().SecureBoot
	if sb == nil || !sb.SecureBoot || sb.SetupMode || sb.Slots["a"] != "ok" || !strings.Contains(sb.Slots["b"], "not signed") {
		t.Errorf("status: %+v, want Secure Boot on, a ok, b not signed", sb)
	}
	text, err := im.abctl("status")
	if err != nil || !strings.Contains(text, "secure boot: on (user mode)  a: ok  b: image is not signed") {
		t.Errorf("abctl status: %v\n%s", err, text)
	}
}
