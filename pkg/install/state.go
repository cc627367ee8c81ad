package install

import (
	"fmt"

	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
)

// activateRoot saves next and the slot's new partition UUIDs in one GPT
// edit (the store's bits from slotstore.Edits, the UUIDs added), then
// reads the store back to check that it sees next.
func (in *installer) activateRoot(next slotstate.State) error {
	// Like the store's Save: heal a table a cut left half-edited
	// first; Edit refuses to write over the only good copy.
	if err := in.disk.Repair(); err != nil {
		return err
	}
	tab, err := in.disk.Read()
	if err != nil {
		return err
	}
	edits, err := slotstore.Edits(tab, next)
	if err != nil {
		return err
	}
	for name, part := range in.parts {
		e := edits[part.Number]
		u := in.uuids[name]
		e.UUID = &u
		edits[part.Number] = e
	}
	if err := in.disk.Edit(edits); err != nil {
		return err
	}
	got, err := in.t.Store.Load()
	if err != nil {
		return err
	}
	if got != next {
		return fmt.Errorf("after the GPT edit %s reads %+v, want %+v", in.t.Store, got, next)
	}
	return nil
}
