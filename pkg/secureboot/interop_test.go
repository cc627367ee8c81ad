package secureboot

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSbverify checks signatures against sbsigntool's sbverify: systemd's
// UEFI stub, shipped unsigned, signed by Sign, must pass `sbverify --cert
// db.pem` and fail against another certificate; and an image sbsign signed
// must pass Verify.
func TestSbverify(t *testing.T) {
	const stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
	if _, err := exec.LookPath("sbverify"); err != nil {
		t.Skip("sbverify not installed (apt-get install sbsigntool)")
	}
	b, err := os.ReadFile(stub)
	if err != nil {
		t.Skipf("%v (apt-get install systemd-boot-efi)", err)
	}
	testKeys(t)
	dir := t.TempDir()
	files, err := owner.Files()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.Name), f.Data, f.Mode); err != nil {
			t.Fatal(err)
		}
	}
	foreignPEM := filepath.Join(dir, "foreign.pem")
	if err := os.WriteFile(foreignPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: foreign.DB.Cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	signed, err := Sign(b, owner.DB)
	if err != nil {
		t.Fatal(err)
	}
	signedPath := filepath.Join(dir, "stub.signed.efi")
	if err := os.WriteFile(signedPath, signed, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sbverify", "--cert", filepath.Join(dir, "db.pem"), signedPath).CombinedOutput(); err != nil {
		t.Errorf("sbverify --cert db.pem: %v\n%s", err, out)
	}
	if out, err := exec.Command("sbverify", "--cert", foreignPEM, signedPath).CombinedOutput(); err == nil {
		t.Errorf("sbverify accepted a foreign certificate:\n%s", out)
	}

	sbsigned := filepath.Join(dir, "stub.sbsign.efi")
	if out, err := exec.Command("sbsign", "--key", filepath.Join(dir, "db.key"), "--cert", filepath.Join(dir, "db.pem"),
		"--output", sbsigned, stub).CombinedOutput(); err != nil {
		t.Fatalf("sbsign: %v\n%s", err, out)
	}
	sb, err := os.ReadFile(sbsigned)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(sb, &Database{Certs: []*x509.Certificate{owner.DB.Cert}}, nil); err != nil {
		t.Errorf("Verify refused sbsign's signature: %v", err)
	}
}
