package efivar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// bootAttrs are the attributes UEFI 2.10 §3.3 (Table 3-1) gives Boot####,
// BootOrder and BootNext.
const bootAttrs = AttrNonVolatile | AttrBootserviceAccess | AttrRuntimeAccess

// BootName returns the name of load option n's variable, Boot####: four
// upper-case hex digits, as UEFI 2.10 §3.1.1 requires. It is the one place
// abboot spells that name; parseBootName reads it back.
func BootName(n uint16) string { return fmt.Sprintf("Boot%04X", n) }

// parseBootName returns n for a file named Boot####-<GlobalVariable>, with
// exactly four upper-case hex digits as §3.1.1 requires.
func parseBootName(file string) (uint16, bool) {
	name, ok := strings.CutSuffix(file, "-"+GlobalVariable.String())
	if !ok || len(name) != 8 || !strings.HasPrefix(name, "Boot") {
		return 0, false
	}
	hex := name[4:]
	if strings.ToUpper(hex) != hex {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 16)
	if err != nil {
		return 0, false
	}
	return uint16(n), true
}

// BootEntry returns Boot####. A missing entry wraps ErrNotFound, one that
// does not decode wraps ErrMalformed.
func (v *Vars) BootEntry(n uint16) (*LoadOption, error) {
	_, data, err := v.Get(BootName(n), GlobalVariable)
	if err != nil {
		return nil, err
	}
	o, err := ParseLoadOption(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", BootName(n), err)
	}
	return o, nil
}

// SetBootEntry writes Boot#### with attributes NV|BS|RT.
func (v *Vars) SetBootEntry(n uint16, o *LoadOption) error {
	b, err := o.MarshalBinary()
	if err != nil {
		return fmt.Errorf("%s: %w", BootName(n), err)
	}
	return v.Set(BootName(n), GlobalVariable, bootAttrs, b)
}

// DeleteBootEntry deletes Boot####; a missing entry wraps ErrNotFound.
func (v *Vars) DeleteBootEntry(n uint16) error {
	return v.Delete(BootName(n), GlobalVariable)
}

// bootIndexes returns the indexes of the Boot#### variables that exist.
func (v *Vars) bootIndexes() ([]uint16, error) {
	names, err := v.names()
	if err != nil {
		return nil, err
	}
	var idx []uint16
	for _, name := range names {
		if n, ok := parseBootName(name); ok {
			idx = append(idx, n)
		}
	}
	return idx, nil
}

// BootEntries returns every Boot#### variable that exists and decodes.
// Entries that cannot be read or decoded are left out of the map and
// reported together in the error (errors.Join of one error per entry, each
// naming its Boot####), so one corrupt entry never hides the others. The map
// is nil only when the variable directory cannot be listed; a caller should
// use a non-nil map even when err is not nil.
func (v *Vars) BootEntries() (map[uint16]*LoadOption, error) {
	idx, err := v.bootIndexes()
	if err != nil {
		return nil, err
	}
	entries := make(map[uint16]*LoadOption, len(idx))
	var errs []error
	for _, n := range idx {
		o, err := v.BootEntry(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entries[n] = o
	}
	return entries, errors.Join(errs...)
}

// FreeBootIndex returns the lowest #### with no Boot#### variable, counting
// corrupt entries as used.
func (v *Vars) FreeBootIndex() (uint16, error) {
	idx, err := v.bootIndexes()
	if err != nil {
		return 0, err
	}
	used := make(map[uint16]bool, len(idx))
	for _, n := range idx {
		used[n] = true
	}
	for n := 0; n <= 0xffff; n++ {
		if !used[uint16(n)] {
			return uint16(n), nil
		}
	}
	return 0, errors.New("all 65536 Boot#### indexes are in use")
}

// AddBootEntry writes o at the lowest free index and returns the index.
func (v *Vars) AddBootEntry(o *LoadOption) (uint16, error) {
	n, err := v.FreeBootIndex()
	if err != nil {
		return 0, err
	}
	return n, v.SetBootEntry(n, o)
}

// getUint16s reads a variable that holds an array of UINT16.
func (v *Vars) getUint16s(name string) ([]uint16, error) {
	_, data, err := v.Get(name, GlobalVariable)
	if err != nil {
		return nil, err
	}
	if len(data)%2 != 0 {
		return nil, fmt.Errorf("%s: odd length %d: %w", name, len(data), ErrMalformed)
	}
	u := make([]uint16, len(data)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(data[2*i:])
	}
	return u, nil
}

func (v *Vars) setUint16s(name string, u []uint16) error {
	var b []byte
	for _, n := range u {
		b = binary.LittleEndian.AppendUint16(b, n)
	}
	return v.Set(name, GlobalVariable, bootAttrs, b)
}

// getUint16 reads a variable that holds one UINT16.
func (v *Vars) getUint16(name string) (uint16, error) {
	u, err := v.getUint16s(name)
	if err != nil {
		return 0, err
	}
	if len(u) != 1 {
		return 0, fmt.Errorf("%s: %d bytes, want 2: %w", name, 2*len(u), ErrMalformed)
	}
	return u[0], nil
}

// BootOrder returns BootOrder; a missing variable wraps ErrNotFound.
func (v *Vars) BootOrder() ([]uint16, error) {
	return v.getUint16s("BootOrder")
}

// SetBootOrder writes BootOrder. An empty order deletes the variable, since
// a variable cannot hold zero bytes (UEFI 2.10 §8.2.3).
func (v *Vars) SetBootOrder(order []uint16) error {
	if len(order) == 0 {
		return v.deleteIfExists("BootOrder")
	}
	return v.setUint16s("BootOrder", order)
}

// BootNext returns BootNext; ok is false when it is not set.
func (v *Vars) BootNext() (n uint16, ok bool, err error) {
	n, err = v.getUint16("BootNext")
	if errors.Is(err, ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return n, true, nil
}

// SetBootNext writes BootNext, which the boot manager tries once on the next
// boot and then deletes (UEFI 2.10 §3.1.2).
func (v *Vars) SetBootNext(n uint16) error {
	return v.setUint16s("BootNext", []uint16{n})
}

// DeleteBootNext deletes BootNext; a missing BootNext is not an error.
func (v *Vars) DeleteBootNext() error {
	return v.deleteIfExists("BootNext")
}

// deleteIfExists deletes a global variable; a missing one is not an error.
func (v *Vars) deleteIfExists(name string) error {
	if err := v.Delete(name, GlobalVariable); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// BootCurrent returns the Boot#### the firmware started this boot with. It
// is stale after a kexec; a missing variable wraps ErrNotFound.
func (v *Vars) BootCurrent() (uint16, error) {
	return v.getUint16("BootCurrent")
}
