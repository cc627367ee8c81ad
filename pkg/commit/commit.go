// Package commit marks a running slot good (docs/design.md, rule 5): the slot
// becomes successful with the highest priority, its Boot#### entry goes
// first in BootOrder, and the fallback copy EFI/BOOT/BOOTX64.EFI becomes
// its UKI. abctl mark-good is a thin shell around it.
//
// The order is the one that keeps a power cut harmless: the state first,
// since it alone decides the next boot (the init repairs BootOrder and the
// fallback copy of a committed slot, rule 8); then BootOrder, then the
// fallback copy, replaced atomically by the function the caller passes.
// Every step writes only when something changes, so committing a
// committed slot writes nothing (rule 7).
//
// It does not run health checks, close the watchdog or remount the ESP.
package commit

import (
	"errors"
	"fmt"

	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstore"
)

// Commit commits slot s. replace makes the fallback copy on the ESP
// mounted at espDir s's UKI and says whether it wrote (fallback.Replace,
// or fallback.ReplaceMounted to remount a read-only ESP); with espDir ""
// the fallback copy is left alone. wrote names what changed: "state",
// "BootOrder", "fallback".
func Commit(store slotstore.Store, vars *efivar.Vars, espDir string, s slot.Slot, replace func(dir string, s slot.Slot) (bool, error)) (wrote []string, err error) {
	old, err := store.Load()
	if err != nil && !errors.Is(err, slotstore.ErrNoState) {
		return nil, fmt.Errorf("reading slot state from %s: %w", store, err)
	}
	if st := old.Commit(s); st != old {
		if err := store.Save(st); err != nil {
			return nil, fmt.Errorf("writing slot state to %s: %w", store, err)
		}
		wrote = append(wrote, "state")
	}
	// Entries that do not decode are named in err; the others are in
	// the map, and PutFirst keeps the ones it does not know.
	entries, err := vars.BootEntries()
	if entries == nil {
		return wrote, fmt.Errorf("reading boot entries: %w", err)
	}
	if moved, err := bootentry.PutFirst(vars, entries, s); err != nil {
		return wrote, err
	} else if moved {
		wrote = append(wrote, "BootOrder")
	}
	if espDir != "" {
		replaced, err := replace(espDir, s)
		if err != nil {
			return wrote, err
		}
		if replaced {
			wrote = append(wrote, "fallback")
		}
	}
	return wrote, nil
}
