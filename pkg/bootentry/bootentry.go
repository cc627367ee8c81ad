// Package bootentry keeps the firmware's boot entries for abboot's slots
// right: one Boot#### load option per slot, "abboot A" and "abboot B", each
// an HD(GPT) node for the ESP and a File node for the slot's UKI (UEFI 2.10
// §3.1.3, §10.3.5.1, §10.3.5.4), and both listed in BootOrder.
//
// Firmware loses entries and resets BootOrder (docs/design.md, lessons), so the
// init calls Repair on every boot; Repair writes only what is wrong, so a
// boot with intact entries writes nothing to NVRAM (rule 7). It does not
// choose slots and never touches BootNext.
package bootentry

import (
	"errors"
	"fmt"
	"slices"

	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/esp"
	"github.com/abboot/abboot/pkg/slot"
)

// Want returns the load option that boots slot s from e.
func Want(e *esp.ESP, s slot.Slot) *efivar.LoadOption {
	return &efivar.LoadOption{
		Attributes:  efivar.LoadOptionActive,
		Description: s.EntryName(),
		FilePath: efivar.DevicePath{
			efivar.HardDrive{
				PartitionNumber: uint32(e.Part.Number),
				PartitionStart:  e.Part.FirstLBA,
				PartitionSize:   e.Part.LastLBA - e.Part.FirstLBA + 1,
				Signature:       e.Part.UUID,
				MBRType:         efivar.MBRTypeGPT,
				SignatureType:   efivar.SignatureTypeGPT,
			},
			efivar.FilePath{Path: s.EFIPath()},
		},
	}
}

// Change is one write Repair made, for the init's repair event.
type Change struct {
	Var  string // e.g. Boot0001 or BootOrder
	What string // created, rewrote, added to BootOrder
	Slot slot.Slot
}

// Find returns the index of slot s's entry: the first whose description
// is s's entry name, else the first whose file path is s's UKI.
func Find(entries map[uint16]*efivar.LoadOption, s slot.Slot) (uint16, bool) {
	keys := make([]uint16, 0, len(entries))
	for k := range entries {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, byName := range []bool{true, false} {
		for _, k := range keys {
			o := entries[k]
			if byName && o.Description == s.EntryName() {
				return k, true
			}
			if f, ok := o.FilePath.File(); !byName && ok {
				if fs, ok := slot.FromEFIPath(f); ok && fs == s {
					return k, true
				}
			}
		}
	}
	return 0, false
}

// Repair makes the entries of slots (normally both, less any whose UKI is
// missing from the ESP) match Want and puts them in BootOrder: an entry
// missing from BootOrder goes in front of every other entry, first before
// the rest of slots, so that the firmware's own choice lands on abboot.
// entries are the Boot#### variables as BootEntries read them; Repair
// updates the map with what it writes. Entries that are already right are
// not written; entries that did not decode are not in the map and are
// left alone, since they may not be ours.
func Repair(v *efivar.Vars, entries map[uint16]*efivar.LoadOption, e *esp.ESP, slots []slot.Slot) ([]Change, error) {
	var changes []Change
	idx := map[slot.Slot]uint16{}
	for _, s := range slots {
		want := Want(e, s)
		n, ok := Find(entries, s)
		switch {
		case !ok:
			var err error
			if n, err = v.AddBootEntry(want); err != nil {
				return changes, fmt.Errorf("creating boot entry %q: %w", s.EntryName(), err)
			}
			changes = append(changes, Change{Var: efivar.BootName(n), What: "created", Slot: s})
		case !same(entries[n], want):
			if err := v.SetBootEntry(n, want); err != nil {
				return changes, fmt.Errorf("rewriting %s: %w", efivar.BootName(n), err)
			}
			changes = append(changes, Change{Var: efivar.BootName(n), What: "rewrote", Slot: s})
		}
		entries[n] = want
		idx[s] = n
	}

	// An unreadable BootOrder is rebuilt from our entries: the firmware
	// appends its own when it scans for devices anyway.
	order, err := v.BootOrder()
	if err != nil && !errors.Is(err, efivar.ErrNotFound) && !errors.Is(err, efivar.ErrMalformed) {
		return changes, fmt.Errorf("reading BootOrder: %w", err)
	}
	var front []uint16
	for _, s := range slots {
		if !slices.Contains(order, idx[s]) {
			front = append(front, idx[s])
			changes = append(changes, Change{Var: "BootOrder", What: "added " + efivar.BootName(idx[s]), Slot: s})
		}
	}
	if len(front) > 0 {
		if err := v.SetBootOrder(append(front, order...)); err != nil {
			return changes, fmt.Errorf("writing BootOrder: %w", err)
		}
	}
	return changes, nil
}

// same compares two load options by their encoding, which is what the
// firmware sees.
func same(a, b *efivar.LoadOption) bool {
	ab, err1 := a.MarshalBinary()
	bb, err2 := b.MarshalBinary()
	return err1 == nil && err2 == nil && string(ab) == string(bb)
}

// PutFirst moves slot s's entry to the front of BootOrder, as a commit
// does (rule 5); it reports whether it wrote, and fails when s has no entry.
func PutFirst(v *efivar.Vars, entries map[uint16]*efivar.LoadOption, s slot.Slot) (bool, error) {
	n, ok := Find(entries, s)
	if !ok {
		return false, fmt.Errorf("no boot entry for slot %s", s)
	}
	order, err := v.BootOrder()
	if err != nil && !errors.Is(err, efivar.ErrNotFound) {
		return false, fmt.Errorf("reading BootOrder: %w", err)
	}
	if len(order) > 0 && order[0] == n {
		return false, nil
	}
	order = append([]uint16{n}, slices.DeleteFunc(order, func(x uint16) bool { return x == n })...)
	if err := v.SetBootOrder(order); err != nil {
		return false, fmt.Errorf("writing BootOrder: %w", err)
	}
	return true, nil
}
