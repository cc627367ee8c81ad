package secureboot

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/foxboron/go-uefi/pkcs7"
	"github.com/spf13/afero"
)

func setVar(t *testing.T, v *efivar.Vars, name string, vendor guid.GUID, data []byte) {
	t.Helper()
	if err := v.Set(name, vendor, efivar.AttrBootserviceAccess|efivar.AttrRuntimeAccess, data); err != nil {
		t.Fatal(err)
	}
}

// splitAuth splits an authenticated write into the PKCS#7 SignedData of
// its EFI_VARIABLE_AUTHENTICATION_2 descriptor and the data after it: an
// EFI_TIME (16 bytes), then a WIN_CERTIFICATE_UEFI_GUID whose dwLength
// covers its 8-byte header, 16-byte CertType and the SignedData (UEFI 2.10
// §8.2.2).
func splitAuth(t *testing.T, b []byte) (sig, data []byte) {
	t.Helper()
	if len(b) < 16+24 {
		t.Fatalf("%d bytes, shorter than EFI_VARIABLE_AUTHENTICATION_2", len(b))
	}
	n := 16 + int(binary.LittleEndian.Uint32(b[16:]))
	if n > len(b) || n < 16+24 {
		t.Fatalf("EFI_VARIABLE_AUTHENTICATION_2 length %d does not fit %d bytes", n, len(b))
	}
	return b[16+24 : n], b[n:]
}

func TestEnroll(t *testing.T) {
	testKeys(t)
	v := efivar.OpenFS(afero.NewMemMapFs())
	setVar(t, v, "SetupMode", efivar.GlobalVariable, []byte{1})
	setVar(t, v, "SecureBoot", efivar.GlobalVariable, []byte{0})
	us, err := owner.Updates()
	if err != nil {
		t.Fatal(err)
	}
	if err := Enroll(v, us); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		name   string
		vendor guid.GUID
		holds  *x509.Certificate
		signer *x509.Certificate
	}{
		{"db", ImageSecurityDatabase, owner.DB.Cert, owner.KEK.Cert},
		{"KEK", efivar.GlobalVariable, owner.KEK.Cert, owner.PK.Cert},
		{"PK", efivar.GlobalVariable, owner.PK.Cert, owner.PK.Cert},
	} {
		attrs, b, err := v.Get(w.name, w.vendor)
		if err != nil {
			t.Fatal(err)
		}
		if attrs != 0x27 {
			t.Errorf("%s: attributes %#x, want NV|BS|RT|time-based auth", w.name, attrs)
		}
		sig, data := splitAuth(t, b)
		db, err := ParseDatabase(data)
		if err != nil || len(db.Certs) != 1 || !db.Certs[0].Equal(w.holds) {
			t.Fatalf("%s: does not hold %s (%v)", w.name, w.holds.Subject, err)
		}
		p, err := pkcs7.ParsePKCS7(sig)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := p.Verify(w.signer); !ok {
			t.Errorf("%s: not signed by %s (%v)", w.name, w.signer.Subject, err)
		}
	}

	// The firmware as it reads after the next boot: user mode, our db.
	setVar(t, v, "SetupMode", efivar.GlobalVariable, []byte{0})
	setVar(t, v, "SecureBoot", efivar.GlobalVariable, []byte{1})
	_, b, _ := v.Get("db", ImageSecurityDatabase)
	_, list := splitAuth(t, b)
	setVar(t, v, "db", ImageSecurityDatabase, list)
	fw, err := ReadFirmware(v)
	if err != nil {
		t.Fatal(err)
	}
	if !fw.SecureBoot || fw.SetupMode || len(fw.DB.Certs) != 1 || len(fw.DBX.Certs)+len(fw.DBX.Hashes) != 0 {
		t.Errorf("ReadFirmware: %+v", fw)
	}
}

func TestEnrollRefusesUserMode(t *testing.T) {
	testKeys(t)
	mem := afero.NewMemMapFs()
	v := efivar.OpenFS(mem)
	setVar(t, v, "SetupMode", efivar.GlobalVariable, []byte{0})
	before, _ := afero.ReadDir(mem, "/")
	us, err := owner.Updates()
	if err != nil {
		t.Fatal(err)
	}
	err = Enroll(v, us)
	if !errors.Is(err, ErrNotSetupMode) {
		t.Fatalf("Enroll in user mode: %v, want ErrNotSetupMode", err)
	}
	if after, _ := afero.ReadDir(mem, "/"); len(after) != len(before) {
		t.Errorf("Enroll wrote %d variables while refusing", len(after)-len(before))
	}
	// In setup mode, but without PK's update: nothing is written either,
	// since db and KEK alone would leave keys no PK governs.
	setVar(t, v, "SetupMode", efivar.GlobalVariable, []byte{1})
	before, _ = afero.ReadDir(mem, "/")
	if err := Enroll(v, us[:2]); err == nil || !strings.Contains(err.Error(), "no update for PK") {
		t.Errorf("Enroll without PK: %v", err)
	}
	if after, _ := afero.ReadDir(mem, "/"); len(after) != len(before) {
		t.Errorf("Enroll wrote %d variables without a PK update", len(after)-len(before))
	}
}

func TestReadFirmwareBad(t *testing.T) {
	for _, tc := range []struct {
		name, v string
		vendor  guid.GUID
		data    []byte
	}{
		{"SecureBoot not a boolean", "SecureBoot", efivar.GlobalVariable, []byte{2}},
		{"dbx broken", "dbx", ImageSecurityDatabase, bytes.Repeat([]byte{0xff}, 40)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := efivar.OpenFS(afero.NewMemMapFs())
			setVar(t, v, tc.v, tc.vendor, tc.data)
			if _, err := ReadFirmware(v); !errors.Is(err, efivar.ErrMalformed) {
				t.Errorf("ReadFirmware: %v, want ErrMalformed", err)
			}
		})
	}
	fw, err := ReadFirmware(efivar.OpenFS(afero.NewMemMapFs()))
	if err != nil || fw.SecureBoot || fw.SetupMode {
		t.Errorf("no variables: %+v, %v; want Secure Boot off", fw, err)
	}
}

func TestHandoverCheck(t *testing.T) {
	testKeys(t)
	signed, err := Sign(testPE(7), owner.DB)
	if err != nil {
		t.Fatal(err)
	}
	on := &Firmware{SecureBoot: true, DB: &Database{Certs: []*x509.Certificate{owner.DB.Cert}}, DBX: &Database{}}
	if HandoverCheck(&Firmware{}, nil) != nil {
		t.Error("Secure Boot off: a check, want none")
	}
	if err := HandoverCheck(on, nil)(signed); err != nil {
		t.Errorf("signed by db: %v", err)
	}
	if err := HandoverCheck(on, nil)(testPE(7)); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: %v, want ErrUnsigned", err)
	}
	if err := HandoverCheck(nil, efivar.ErrMalformed)(signed); err == nil {
		t.Error("unreadable state: accepted, want every UKI refused")
	}
}
