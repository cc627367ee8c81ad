package slotstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

// Vendor is abboot's EFI vendor GUID, the namespace of its own variables.
var Vendor = guid.MustParse("c2a9b6e4-5d1f-4b7a-9e3c-abb0070a0b01")

// VarName is the EFI variable that holds the slot state.
const VarName = "AbbootSlots"

// varAttrs: the state must survive a reboot (non-volatile) and be
// readable and writable by abboot's init after ExitBootServices (runtime
// access, which UEFI 2.10 §8.2.3 requires to come with boot-service
// access).
const varAttrs = efivar.AttrNonVolatile | efivar.AttrBootserviceAccess | efivar.AttrRuntimeAccess

// The variable's data, format version 1, 15 bytes:
//
//	offset size
//	0      3    magic "ABS"
//	3      1    version, 1
//	4      1    slot A priority, 0..15
//	5      1    slot A tries, 0..15
//	6      1    slot A flags: bit 0 successful, bits 1-2 the crash
//	            count (0..3, issue 13), others zero
//	7      3    slot B priority, tries, flags, as for A
//	10     1    counted marker: 0 none, 'a' or 'b'
//	11     4    CRC32 (IEEE, as in the GPT) of bytes 0-10, little-endian
//
// Decoding is strict, so that everything that decodes re-encodes to the
// same bytes: a wrong length, magic, version or CRC32, a value out of
// range or a reserved bit set is ErrCorrupt. A later version changes the
// version byte; this one refuses it rather than guessing. The crash count
// took two flag bits that were reserved, without a new version: a state
// with no crashes has the same bytes as before, so an older init reads it
// (one that finds a count, after a crash, rebuilds the state: rule 8).
const (
	varMagic   = "ABS"
	varVersion = 1
	varLen     = 15
	flagOK     = 1 << 0
	crashShift = 1
	crashMask  = slotstate.MaxCrashes << crashShift
)

// encodeVar returns the variable data for st, which must be valid.
func encodeVar(st slotstate.State) ([]byte, error) {
	if err := st.Validate(); err != nil {
		return nil, err
	}
	b := append([]byte(varMagic), varVersion)
	for _, s := range slot.All {
		a := st.Get(s)
		var flags byte
		if a.Successful {
			flags |= flagOK
		}
		flags |= byte(a.Crashes) << crashShift
		b = append(b, byte(a.Priority), byte(a.Tries), flags)
	}
	var counted byte
	if st.Counted != "" {
		counted = string(st.Counted)[0]
	}
	b = append(b, counted)
	return binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b)), nil
}

// decodeVar parses variable data; every error wraps ErrCorrupt.
func decodeVar(b []byte) (slotstate.State, error) {
	st, err := decodeVarFields(b)
	if err != nil {
		return slotstate.State{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return st, nil
}

func decodeVarFields(b []byte) (slotstate.State, error) {
	var st slotstate.State
	switch {
	case len(b) < 4 || string(b[:3]) != varMagic:
		return st, fmt.Errorf("no %q magic", varMagic)
	case b[3] != varVersion:
		return st, fmt.Errorf("format version %d, want %d", b[3], varVersion)
	case len(b) != varLen:
		return st, fmt.Errorf("%d bytes, want %d", len(b), varLen)
	}
	if got, want := crc32.ChecksumIEEE(b[:varLen-4]), binary.LittleEndian.Uint32(b[varLen-4:]); got != want {
		return st, fmt.Errorf("CRC32 is %#08x, data says %#08x", got, want)
	}
	for i, s := range slot.All {
		f := b[4+3*i:]
		if f[2]&^(flagOK|crashMask) != 0 {
			return st, fmt.Errorf("slot %s: reserved flags %#02x", s, f[2])
		}
		st = st.With(s, slotstate.Attrs{Priority: int(f[0]), Tries: int(f[1]), Successful: f[2]&flagOK != 0,
			Crashes: int(f[2]&crashMask) >> crashShift})
	}
	switch c := b[10]; c {
	case 0:
	case string(slot.A)[0], string(slot.B)[0]:
		st.Counted = slot.Slot(c)
	default:
		return st, fmt.Errorf("counted marker %#02x is not a slot", c)
	}
	if err := st.Validate(); err != nil {
		return slotstate.State{}, err
	}
	return st, nil
}

// Var keeps the state in the EFI variable VarName under Vendor, for
// layouts that have only an ESP. Save is one SetVariable, which is
// atomic: UEFI 2.10 §8.2.3 (SetVariable) forbids the firmware a partial
// save and says that after a power failure during the call the variable
// holds its previous value or its new one. On a plain directory
// (efivar.Open of a path, tests) efivar writes a temp file, syncs it and
// renames it over the variable, which is atomic too.
type Var struct {
	v *efivar.Vars
}

// NewVar returns the variable store in v.
func NewVar(v *efivar.Vars) *Var { return &Var{v: v} }

func (s *Var) String() string { return "efivar:" + VarName }

// Load reads the variable. A missing one gives ErrNoState; one that does
// not decode gives ErrCorrupt.
func (s *Var) Load() (slotstate.State, error) {
	_, data, err := s.v.Get(VarName, Vendor)
	switch {
	case errors.Is(err, efivar.ErrNotFound):
		return slotstate.State{}, fmt.Errorf("loading slot state from %s: %w: %w", s, ErrNoState, err)
	case errors.Is(err, efivar.ErrMalformed):
		return slotstate.State{}, fmt.Errorf("loading slot state from %s: %w: %w", s, ErrCorrupt, err)
	case err != nil:
		return slotstate.State{}, fmt.Errorf("loading slot state from %s: %w", s, err)
	}
	st, err := decodeVar(data)
	if err != nil {
		return slotstate.State{}, fmt.Errorf("loading slot state from %s: %w", s, err)
	}
	return st, nil
}

// Save writes st to the variable, unless the variable already holds
// exactly these bytes and attributes: NVRAM wears, and a steady-state
// boot must not write (rule 7).
func (s *Var) Save(st slotstate.State) error {
	data, err := encodeVar(st)
	if err != nil {
		return fmt.Errorf("saving slot state to %s: %w", s, err)
	}
	if attrs, old, err := s.v.Get(VarName, Vendor); err == nil && attrs == varAttrs && bytes.Equal(old, data) {
		return nil
	}
	if err := s.v.Set(VarName, Vendor, varAttrs, data); err != nil {
		return fmt.Errorf("saving slot state to %s: %w", s, err)
	}
	return nil
}
