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

// ImageSecurityDatabase is EFI_IMAGE_SECURITY_DATABASE_GUID, the vendor of
// db and dbx (UEFI 2.10 §32.6.1); PK, KEK, SecureBoot and SetupMode are
// EFI_GLOBAL_VARIABLE's (§3.3).
var ImageSecurityDatabase = guid.MustParse("d719b2cb-3d3a-4596-a3bc-dad00e67656f")

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
	_, data, err := v.Get(name, ImageSecurityDatabase)
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

// Update is an authenticated write of one key variable, as written to
// efivarfs: an EFI_VARIABLE_AUTHENTICATION_2 descriptor (a timestamp and a
// PKCS#7 signature over name, vendor, attributes, timestamp and data, UEFI
// 2.10 §8.2.2) followed by the signature list. Firmware checks it even in
// setup mode, so it can only be made with the private keys, on the build
// machine; the device needs only the result (the .auth files of sbctl and
// efitools).
type Update struct {
	Name string // PK, KEK or db
	Data []byte
}

// enrollOrder is the order updates are written, as sbctl does: db (signed
// by KEK), then KEK (signed by PK), then PK (signed by itself). PK goes last
// because writing it ends setup mode; a failure before it leaves the
// firmware in setup mode, and the enrollment can simply be run again.
var enrollOrder = []struct {
	v      goefivar.Efivar
	vendor guid.GUID
}{
	{goefivar.Db, ImageSecurityDatabase},
	{goefivar.KEK, efivar.GlobalVariable},
	{goefivar.PK, efivar.GlobalVariable},
}

// Updates returns the signed updates that enroll ks, in enrollOrder.
func (ks *KeySet) Updates() ([]Update, error) {
	signers := map[string][2]Key{ // variable -> {signer, content}
		"db":  {ks.KEK, ks.DB},
		"KEK": {ks.PK, ks.KEK},
		"PK":  {ks.PK, ks.PK},
	}
	var us []Update
	for _, e := range enrollOrder {
		k := signers[e.v.Name]
		list := MarshalCerts(Owner, k[1].Cert)
		_, signed, err := signature.SignEFIVariable(e.v, rawVar(list), k[0].Signer, k[0].Cert)
		if err != nil {
			return nil, fmt.Errorf("signing %s: %w", e.v.Name, err)
		}
		us = append(us, Update{Name: e.v.Name, Data: signed.Bytes()})
	}
	return us, nil
}

// Enroll writes the updates (one each for db, KEK and PK, as Updates
// makes them) into the firmware in enrollOrder. The firmware must be in
// setup mode; otherwise nothing is written.
func Enroll(v *efivar.Vars, updates []Update) error {
	fw, err := ReadFirmware(v)
	if err != nil {
		return err
	}
	if !fw.SetupMode {
		return fmt.Errorf("%w (SetupMode=0): clear the Secure Boot keys in the firmware setup (\"reset to setup mode\") first", ErrNotSetupMode)
	}
	byName := map[string][]byte{}
	for _, u := range updates {
		byName[u.Name] = u.Data
	}
	for _, e := range enrollOrder {
		if len(byName[e.v.Name]) == 0 {
			return fmt.Errorf("no update for %s: want db, KEK and PK", e.v.Name)
		}
	}
	for _, e := range enrollOrder {
		if err := v.Set(e.v.Name, e.vendor, uint32(e.v.Attributes), byName[e.v.Name]); err != nil {
			return fmt.Errorf("enrolling %s: %w", e.v.Name, err)
		}
	}
	return nil
}

// rawVar is variable data for go-uefi's SignEFIVariable.
type rawVar []byte

func (r rawVar) Marshal(b *bytes.Buffer) { b.Write(r) }
func (r rawVar) Bytes() []byte           { return r }

// HandoverCheck is the check a handover makes of its target's UKI
// (handover.Env.Verify), given what ReadFirmware returned: none with
// Secure Boot off; Verify against db and dbx with it on, because the
// kernel's own kexec check covers only the kernel, not the initrd and
// command line next to it in the UKI; and a refusal of every UKI when the
// state could not be read (fail closed).
func HandoverCheck(fw *Firmware, err error) func([]byte) error {
	switch {
	case err != nil:
		return func([]byte) error { return fmt.Errorf("reading the Secure Boot state: %w", err) }
	case fw == nil || !fw.SecureBoot:
		return nil
	}
	return func(b []byte) error {
		_, err := Verify(b, fw.DB, fw.DBX)
		return err
	}
}
