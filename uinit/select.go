package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/handover"
	"github.com/abboot/abboot/pkg/measure"
	"github.com/abboot/abboot/pkg/secureboot"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstore"
)

// choose is rules 1-4 and 7-9 around bootcheck: it loads and repairs the
// slot state, then runs the handover sequence (handover.Env.Run): decide,
// write, hand over. It returns the plan for this boot, Continue or Rescue,
// once no handover is left to try.
func (b *boot) choose(disk, espDir string, espFS fs.FS, running slot.Slot, fw *firmware, rootFailed bool) *handover.Plan {
	b.env = &handover.Env{ESPDir: espDir, Entries: fw.entries, Load: b.kexecLoad, Verify: secureboot.HandoverCheck(fw.secureBoot, fw.secureBootErr), Measure: measure.Prepare, Start: b.start, Written: b.selected, Log: b.log}
	crashed := b.crashes()
	store, err := slotstore.Open(disk, b.vars)
	if err != nil {
		// Rule 8: no state store never stops a boot. Nothing can be
		// counted, so no handover: boot the running slot.
		b.log.Error("select", err, "running", running, "reason", "no-state-store", "action", "continue")
		return &handover.Plan{
			Input:    bootcheck.Input{Running: running},
			Decision: bootcheck.Decision{Action: bootcheck.Continue, Target: running, Reason: "no-state-store"},
		}
	}
	b.env.Store = store
	state, err := store.Load()
	if err != nil {
		// Rule 8: an unreadable (or never written) store is rebuilt with
		// the running slot as the committed one.
		if errors.Is(err, slotstore.ErrNoState) {
			b.log.Log("repair", "what", "state", "store", store, "state", "new", "result", "ok")
		} else {
			b.log.Log("repair", "what", "state", "store", store, "state", "unreadable", "err", err, "result", "ok")
		}
		d := bootcheck.Rebuild(running)
		return b.env.Run(&handover.Plan{Input: bootcheck.Input{State: d.State, Running: running}, Decision: d})
	}
	unsaved := false
	if espFS != nil {
		// A slot whose UKI is not on the ESP is half written or gone:
		// it must never be chosen.
		for _, s := range slot.All {
			if _, err := fs.Stat(espFS, s.UKIPath()); err != nil && s != running && state.Get(s).Priority > 0 {
				state, unsaved = state.MarkBad(s), true
				b.log.Log("repair", "slot", s, "what", "marked-bad", "err", fmt.Errorf("slot UKI: %w", err), "result", "ok")
			}
		}
	}
	p := b.env.Decide(bootcheck.Input{
		State:           state,
		Running:         running,
		Handover:        b.params.Handover == string(running),
		RootFailed:      rootFailed,
		KexecAllowed:    !b.params.NoKexec,
		FirmwareAllowed: len(fw.entries) > 0,
		Crashed:         crashed,
		CrashLimit:      b.params.CrashLimit,
	})
	p.Unsaved = p.Unsaved || unsaved
	return b.env.Run(p)
}

// selected logs the select event of a plan whose state was just written
// (or whose write failed, which err says).
func (b *boot) selected(p *handover.Plan, err error) {
	if err != nil {
		b.log.Error("select", err, "store", b.env.Store)
	}
	d := p.Decision
	kv := []any{"running", p.Input.Running, "best", d.Target, "reason", d.Reason}
	if t := d.Target; t != "" {
		if old, new := p.Input.State.Get(t).Tries, d.State.Get(t).Tries; old != new {
			kv = append(kv, "tries", fmt.Sprintf("%d->%d", old, new))
		}
	}
	if d.Spent != "" {
		kv = append(kv, "spent", d.Spent)
	}
	if c := crashChanges(p.Input.State, d.State); c != "" {
		kv = append(kv, "crashes", c)
	}
	b.log.Log("select", append(kv, "action", d.Action, "write", d.Write)...)
}

// rootFailed is rule 4 after a Continue: the running slot's root did not
// come up; decide again from the state just written, with the slot marked
// bad, and run the sequence again.
func (b *boot) rootFailed(p *handover.Plan) *handover.Plan {
	in := p.Input
	// The crashes are in the state just written: not again.
	in.State, in.RootFailed, in.Crashed = p.Decision.State, true, nil
	return b.env.Run(b.env.Decide(in))
}
