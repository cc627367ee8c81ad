package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/handover"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstore"
)

// selection is the init's decision with what acting on it needs.
type selection struct {
	*handover.Plan
	dirty bool            // the state decided on differs from the stored one
	store slotstore.Store // nil when there is none
	env   *handover.Env
}

// choose is rules 1-4 and 7-9 around bootcheck: it loads the slot state,
// decides, stages a kexec before writing anything (so that a refused kexec
// turns into a BootNext handover whose try is counted once), writes the
// decision's state and logs the select event. The caller acts.
func (b *boot) choose(disk, espDir string, espFS fs.FS, running slot.Slot, fw *firmware, rootFailed bool) *selection {
	sel := &selection{
		Plan: &handover.Plan{In: bootcheck.Input{Running: running}},
		env:  &handover.Env{ESPDir: espDir, Entries: fw.entries, Load: b.kexecLoad, Log: b.log},
	}
	store, err := slotstore.Open(disk, b.vars)
	if err != nil {
		// Rule 8: no state store never stops a boot. Nothing can be
		// counted, so no handover: boot the running slot.
		b.log.Log("select", "running", running, "reason", "no-state-store", "action", "continue", "result", "error", "err", err)
		sel.D = bootcheck.Decision{Action: bootcheck.Continue, Target: running, Reason: "no-state-store"}
		return sel
	}
	sel.store = store
	state, err := store.Load()
	if err != nil {
		// Rule 8: an unreadable (or never written) store is rebuilt with
		// the running slot as the committed one.
		kv := []any{"what", "state", "store", store, "state", "unreadable", "err", err}
		if errors.Is(err, slotstore.ErrNoState) {
			kv = kv[:len(kv)-2]
			kv[5] = "new"
		}
		sel.D = bootcheck.Rebuild(running)
		sel.In.State = sel.D.State
		b.log.Log("repair", append(kv, "result", "ok")...)
		return b.write(sel)
	}
	if espFS != nil {
		// A slot whose UKI is not on the ESP is half written or gone:
		// it must never be chosen.
		for _, s := range slot.All {
			if _, err := fs.Stat(espFS, s.UKIPath()); err != nil && s != running && state.Get(s).Priority > 0 {
				state, sel.dirty = state.MarkBad(s), true
				b.log.Log("repair", "slot", s, "what", "marked-bad", "err", fmt.Errorf("slot UKI: %w", err), "result", "ok")
			}
		}
	}
	sel.In = bootcheck.Input{
		State:           state,
		Running:         running,
		Handover:        b.params.Handover == string(running),
		RootFailed:      rootFailed,
		KexecAllowed:    !b.params.NoKexec,
		FirmwareAllowed: len(fw.entries) > 0,
	}
	sel.Plan = sel.env.Settle(sel.In)
	return b.write(sel)
}

// write stores the decision's state when it changed and logs the select
// event. A failed write must not lead to a handover, which would leave
// the try uncounted (rule 2): only a committed running slot still boots.
func (b *boot) write(sel *selection) *selection {
	d := &sel.D
	d.Write = d.Write || sel.dirty
	if d.Write {
		if err := sel.store.Save(d.State); err != nil {
			b.log.Log("select", "store", sel.store, "result", "error", "err", err)
			if d.Action != bootcheck.Continue || d.Reason != bootcheck.ReasonCommitted {
				*d = bootcheck.Decision{Action: bootcheck.Rescue, Reason: fmt.Sprintf("writing the slot state failed: %v", err)}
			}
		}
	}
	kv := []any{"running", sel.In.Running, "best", d.Target, "reason", d.Reason}
	if t := d.Target; t != "" {
		if old, new := sel.In.State.Get(t).Tries, d.State.Get(t).Tries; old != new {
			kv = append(kv, "tries", fmt.Sprintf("%d->%d", old, new))
		}
	}
	if d.Spent != "" {
		kv = append(kv, "spent", d.Spent)
	}
	b.log.Log("select", append(kv, "action", d.Action, "write", d.Write)...)
	return sel
}

// rootFailed is rule 4 after a Continue: the running slot's root did not
// come up; decide again from the state just written, with the slot marked
// bad, and write.
func (b *boot) rootFailed(sel *selection) *selection {
	sel.In.State, sel.In.RootFailed, sel.dirty = sel.D.State, true, false
	sel.Plan = sel.env.Settle(sel.In)
	return b.write(sel)
}

// failed is called when a handover did not happen: decide again without
// that way out, from the same stored state, so that the try the first
// decision counted is counted once in all, and write.
func (b *boot) failed(sel *selection) *selection {
	sel.Plan = sel.env.Failed(sel.Plan)
	return b.write(sel)
}
