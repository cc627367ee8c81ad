// Package handover carries out bootcheck's decisions, for abboot's init
// and for abctl reboot alike (docs/design.md, rules 1 and 2). Both follow one
// sequence, Run: decide, write the decided slot state, then act.
//
// Deciding (Decide, DecideReboot) turns bootcheck's decision into a Plan
// that can be carried out: the target slot's UKI is staged for kexec
// before anything is written, so that a kexec the kernel refuses becomes
// a BootNext handover that counts the try once, and a BootNext handover
// gets the target's Boot####. Run writes the plan's state and hands over;
// a handover that fails is decided again without that way out. It does
// not load the slot state (callers do, and repair it first) and does not
// boot the running slot's OS: a Continue plan is the caller's to follow.
package handover

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/kexec"
	"github.com/abboot/abboot/pkg/slotstate"
)

// Store is where the decided slot state is written (a slotstore.Store).
type Store interface {
	Save(slotstate.State) error
}

// Env is what deciding and handing over need from the machine.
type Env struct {
	ESPDir  string                        // where the ESP is mounted; "" turns kexec off
	Entries map[uint16]*efivar.LoadOption // the Boot#### entries
	// Load stages a UKI for kexec (kexec.Load); nil turns kexec off.
	Load func(path string, editCmdline func(string) string) error
	// Store keeps the slot state; nil when there is none, and then no
	// plan may need a write.
	Store Store
	// Start hands over to a Kexec or Firmware plan (the package's Start,
	// with whatever the caller does just before) and returns only when
	// the handover failed. A nil error, which only a test's Start
	// returns, ends Run as if the machine had gone.
	Start func(*Plan) error
	// Written, when set, is told of each plan Run has written, with the
	// error of the write (the init logs its select event there).
	Written func(p *Plan, err error)
	Log     *event.Logger
}

// Plan is a decision that can be carried out.
type Plan struct {
	Input    bootcheck.Input    // what was decided on
	Decision bootcheck.Decision // what to do, and the state to write
	// Unsaved says the stored state is not Input.State (the caller
	// repaired or changed it before deciding), so it must be written even
	// when the decision changes nothing.
	Unsaved bool
	UKI     string // the target's UKI, staged, for a kexec
	Entry   uint16 // the target's Boot####, for a BootNext handover
	decide  func(bootcheck.Input) bootcheck.Decision
}

// Decide decides on in (bootcheck.Decide), as the init does, and makes
// the decision one that can be carried out: a kexec whose staging fails,
// or a BootNext handover to a slot with no entry, is decided again
// without that way out, from the same input, so the state to write
// counts each try once.
func (e *Env) Decide(in bootcheck.Input) *Plan { return e.plan(in, bootcheck.Decide) }

// DecideReboot is Decide for a reboot asked for on a running system
// (abctl reboot): when the decision is to keep the running slot, the
// reboot goes to that slot too (bootcheck.Reboot), by kexec when it can be
// staged, else by BootNext when the slot has an entry.
func (e *Env) DecideReboot(in bootcheck.Input) *Plan { return e.plan(in, bootcheck.Reboot) }

// errNoEntry is why a BootNext handover cannot go to a slot.
var errNoEntry = errors.New("no boot entry for the slot")

func (e *Env) plan(in bootcheck.Input, decide func(bootcheck.Input) bootcheck.Decision) *Plan {
	if e.Load == nil || e.ESPDir == "" {
		in.KexecAllowed = false
	}
	p := &Plan{Input: in, Decision: decide(in), decide: decide}
	t := p.Decision.Target
	switch p.Decision.Action {
	case bootcheck.Kexec:
		p.UKI = filepath.Join(e.ESPDir, t.UKIPath())
		if err := e.Load(p.UKI, func(c string) string { return bootparam.WithHandover(c, string(t)) }); err != nil {
			e.Log.Error("handover", err, "slot", t, "action", "kexec")
			return e.plan(without(in, bootcheck.Kexec), decide)
		}
	case bootcheck.Firmware:
		n, ok := bootentry.Find(e.Entries, t)
		if !ok {
			e.Log.Error("handover", errNoEntry, "slot", t, "action", "firmware")
			return e.plan(without(in, bootcheck.Firmware), decide)
		}
		p.Entry = n
	}
	return p
}

// Retry is p decided again without its way of handing over, which did not
// happen: from the same input, so that the try p counted is counted once
// in all.
func (e *Env) Retry(p *Plan) *Plan {
	decide := p.decide
	if decide == nil { // a plan the caller made itself (bootcheck.Rebuild)
		decide = bootcheck.Decide
	}
	q := e.plan(without(p.Input, p.Decision.Action), decide)
	q.Unsaved = p.Unsaved
	return q
}

func without(in bootcheck.Input, a bootcheck.Action) bootcheck.Input {
	switch a {
	case bootcheck.Kexec:
		in.KexecAllowed = false
	case bootcheck.Firmware:
		in.FirmwareAllowed = false
	}
	return in
}

// Run is the sequence the init and abctl reboot share: it writes p's
// state, then hands over when p says so (rules 1 and 2). The state is
// written first because the handover does not return: the try must be
// counted before it. A failed write must not lead to a handover, which
// would leave the try uncounted, so the plan becomes Rescue; only a
// committed running slot still boots. A handover that returns is retried
// (Retry), written and tried again. Run returns the first plan that is no
// handover to carry out: Continue (the caller boots the running slot) or
// Rescue.
func (e *Env) Run(p *Plan) *Plan {
	for {
		e.write(p)
		a := p.Decision.Action
		if a != bootcheck.Kexec && a != bootcheck.Firmware {
			return p
		}
		err := e.Start(p)
		if err == nil {
			return p
		}
		e.Log.Error("handover", err, "slot", p.Decision.Target, "action", a)
		p = e.Retry(p)
	}
}

// write stores p's state when the decision changed it or p is Unsaved.
func (e *Env) write(p *Plan) {
	d := &p.Decision
	d.Write = d.Write || p.Unsaved
	var err error
	if d.Write {
		if e.Store == nil {
			err = errors.New("no slot state store")
		} else {
			err = e.Store.Save(d.State)
		}
		// Without the write only a committed running slot may boot:
		// it has no try to count (whatever the reason, committed or
		// crash-limit).
		if err != nil && (d.Action != bootcheck.Continue || !p.Input.State.Get(d.Target).Committed()) {
			*d = bootcheck.Decision{Action: bootcheck.Rescue, Reason: fmt.Sprintf("writing the slot state failed: %v", err)}
		}
	}
	if e.Written != nil {
		e.Written(p, err)
	}
}

// Start hands over to p's target: a kexec of the staged UKI, or BootNext
// set to p.Entry and a firmware reboot. It returns only on failure.
func Start(v *efivar.Vars, p *Plan) error {
	switch p.Decision.Action {
	case bootcheck.Kexec:
		return kexec.Exec()
	case bootcheck.Firmware:
		if err := v.SetBootNext(p.Entry); err != nil {
			return err
		}
		unix.Sync()
		return fmt.Errorf("reboot: %w", unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART))
	}
	return fmt.Errorf("%v is no handover", p.Decision.Action)
}
