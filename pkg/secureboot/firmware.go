package secureboot

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/foxboron/go-uefi/efi/signature"
	goefivar "github.com/foxboron/go-uefi/efivar"
)

// imageSecurityDatabase is EFI_IMAGE_SECURITY_DATABASE_GUID, the vendor of
// db and dbx (UEFI 2.10 §32.6.1); PK, KEK, SecureBoot and SetupMode are
// EFI_GLOBAL_VARIABLE's (§3.3).
var imageSecurityDatabase = guid.MustParse("d719b2cb-3d3a-4596-a3bc-dad00e67656f")

// attrTimeBasedAuth is EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS
// (UEFI 2.10 §8.2.1), which PK, KEK, db and dbx carry.
const attrTimeBasedAuth = 0x20

// ErrNotSetupMode is returned (wrapped) by Enroll when the firmware holds a
// PK already: then only the owner of that PK can change the keys.
var ErrNotSetupMode = errors.New("firmware is not in Secure Boot setup mode")

// Firmware is the firmware's Secure Boot state as the OS sees it.
type Firmware struct {
	// SecureBoot is the SecureBoot variable: the firmware checked the
	// signature of what it booted (UEFI 2.10 §32.3).
	SecureBoot bool
	// SetupMode is the SetupMode variable: no PK, key variables writable
	// without authentication.
	SetupMode bool
	DB, DBX   *Database
}

// ReadFirmware reads SecureBoot, SetupMode, db and dbx. Missing variables
// read as off and empty (firmware without Secure Boot support has none); a
// db or dbx that does not parse is an error, never taken as empty.
func ReadFirmware(v *efivar.Vars) (*Firmware, error) {
	fw := &Firmware{}
	var err error
	if fw.SecureBoot, err = readBool(v, "SecureBoot"); err != nil {
		return nil, err
	}
	if fw.SetupMode, err = readBool(v, "SetupMode"); err != nil {
		return nil, err
	}
	if fw.DB, err = readDatabase(v, "db"); err != nil {
		return nil, err
	}
	if fw.DBX, err = readDatabase(v, "dbx"); err != nil {
		return nil, err
	}
	return fw, nil
}

func readBool(v *efivar.Vars, name string) (bool, error) {
	_, data, err := v.Get(name, efivar.GlobalVariable)
	if errors.Is(err, efivar.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if len(data) != 1 || data[0] > 1 {
		return false, fmt.Errorf("EFI variable %s: %x is not a boolean: %w", name, data, efivar.ErrMalformed)
	}
	return data[0] == 1, nil
}

func readDatabase(v *efivar.Vars, name string) (*Database, error) {
	_, data, err := v.Get(name, imageSecurityDatabase)
	if errors.Is(err, efivar.ErrNotFound) {
		return &Database{}, nil
	}
	if err != nil {
		return nil, err
	}
	db, err := ParseDatabase(data)
	if err != nil {
		return nil, fmt.Errorf("EFI variable %s: %w: %w", name, efivar.ErrMalformed, err)
	}
	return db, nil
}

// Enroll makes ks the firmware's keys, as sbctl does: db signed by KEK,
// then KEK signed by PK, then PK signed by itself. Writing PK last matters:
// it ends setup mode, after which db and KEK writes must be signed by the
// keys just enrolled; with PK last, a failure before it leaves the firmware
// in setup mode and Enroll can simply be run again. Each write is an
// EFI_VARIABLE_AUTHENTICATION_2 descriptor followed by the signature list
// (UEFI 2.10 §8.2.2), which firmware checks even in setup mode for the
// time-based authenticated variables. The firmware must be in setup mode.
func Enroll(v *efivar.Vars, ks *KeySet) error {
	fw, err := ReadFirmware(v)
	if err != nil {
		return err
	}
	if !fw.SetupMode {
		return fmt.Errorf("%w (SetupMode=0): clear the Secure Boot keys in the firmware setup (\"reset to setup mode\") first", ErrNotSetupMode)
	}
	for _, w := range []struct {
		v      goefivar.Efivar
		vendor guid.GUID
		key    Key // signs the update
		cert   Key // goes into the variable
	}{
		{goefivar.Db, imageSecurityDatabase, ks.KEK, ks.DB},
		{goefivar.KEK, efivar.GlobalVariable, ks.PK, ks.KEK},
		{goefivar.PK, efivar.GlobalVariable, ks.PK, ks.PK},
	} {
		list := MarshalCerts(Owner, w.cert.Cert)
		_, signed, err := signature.SignEFIVariable(w.v, rawVar(list), w.key.Signer, w.key.Cert)
		if err != nil {
			return fmt.Errorf("signing %s: %w", w.v.Name, err)
		}
		var b bytes.Buffer
		signed.Marshal(&b)
		if err := v.Set(w.v.Name, w.vendor, uint32(w.v.Attributes), b.Bytes()); err != nil {
			return fmt.Errorf("enrolling %s: %w", w.v.Name, err)
		}
	}
	return nil
}

// rawVar is variable data for go-uefi's SignEFIVariable.
type rawVar []byte

func (r rawVar) Marshal(b *bytes.Buffer) { b.Write(r) }
func (r rawVar) Bytes() []byte           { return r }
