// Package handover carries out bootcheck's decisions, for abboot's init
// and for abctl reboot alike (docs/design.md, rules 1 and 2): it stages the
// kexec of the target slot's UKI before anything is written, so that a
// kexec the kernel refuses becomes a BootNext handover that counts the try
// once; it finds the target's Boot#### for a BootNext handover; and it
// performs the handover. It does not load or write slot state: callers
// write Plan.D.State between Settle and Go.
package handover

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/kexec"
)

// Env is what a handover needs from the machine.
type Env struct {
	ESPDir  string                        // where the ESP is mounted; "" turns kexec off
	Entries map[uint16]*efivar.LoadOption // the Boot#### entries
	// Load stages a UKI for kexec (kexec.Load); nil turns kexec off.
	Load func(path string, editCmdline func(string) string) error
	Log  *event.Logger
}

// Plan is a decision that can be carried out.
type Plan struct {
	In    bootcheck.Input
	D     bootcheck.Decision
	UKI   string // the target's UKI, staged, for a kexec
	Entry uint16 // the target's Boot####, for a BootNext handover
}

// Settle decides on in and makes the decision one that can be carried
// out: a kexec whose staging fails, or a BootNext handover to a slot with
// no entry, is decided again without that way out, from the same input,
// so the state to write counts each try once.
func (e *Env) Settle(in bootcheck.Input) *Plan {
	if e.Load == nil || e.ESPDir == "" {
		in.KexecAllowed = false
	}
	p := &Plan{In: in, D: bootcheck.Decide(in)}
	if p.D.Action == bootcheck.Kexec {
		p.UKI = filepath.Join(e.ESPDir, p.D.Target.UKIPath())
		target := string(p.D.Target)
		if err := e.Load(p.UKI, func(c string) string { return bootparam.WithHandover(c, target) }); err != nil {
			e.Log.Log("handover", "slot", target, "action", "kexec", "result", "error", "err", err)
			return e.Settle(without(in, bootcheck.Kexec))
		}
	}
	if p.D.Action == bootcheck.Firmware {
		n, ok := bootentry.Find(e.Entries, p.D.Target)
		if !ok {
			e.Log.Log("handover", "slot", p.D.Target, "action", "firmware", "result", "error", "err", "no boot entry for the slot")
			return e.Settle(without(in, bootcheck.Firmware))
		}
		p.Entry = n
	}
	return p
}

// Failed is called when a handover did not happen (kexec or reboot
// returned): it settles again without that way out.
func (e *Env) Failed(p *Plan) *Plan { return e.Settle(without(p.In, p.D.Action)) }

func without(in bootcheck.Input, a bootcheck.Action) bootcheck.Input {
	switch a {
	case bootcheck.Kexec:
		in.KexecAllowed = false
	case bootcheck.Firmware:
		in.FirmwareAllowed = false
	}
	return in
}

// Kexec starts the staged UKI; it returns only on failure.
func Kexec() error { return kexec.Exec() }

// Firmware sets BootNext to entry and reboots; it returns only on failure.
func Firmware(v *efivar.Vars, entry uint16) error {
	if err := v.SetBootNext(entry); err != nil {
		return err
	}
	unix.Sync()
	return fmt.Errorf("reboot: %w", unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART))
}

// Reboot is Settle for a reboot asked for on a running system (abctl
// reboot): when the decision is to keep the running slot, the reboot goes
// to that slot too (bootcheck.Reboot), by kexec when it can be staged,
// else by BootNext when the slot has an entry.
func (e *Env) Reboot(in bootcheck.Input) *Plan {
	p := e.Settle(in)
	if p.D.Action != bootcheck.Continue {
		return p
	}
	in, t := p.In, p.D.Target
	if in.KexecAllowed {
		p.UKI = filepath.Join(e.ESPDir, t.UKIPath())
		if err := e.Load(p.UKI, func(c string) string { return bootparam.WithHandover(c, string(t)) }); err != nil {
			e.Log.Log("handover", "slot", t, "action", "kexec", "result", "error", "err", err)
			in.KexecAllowed = false
		}
	}
	n, ok := bootentry.Find(e.Entries, t)
	if !ok {
		in.FirmwareAllowed = false
	}
	p.In, p.D = in, bootcheck.Reboot(in)
	if p.D.Action == bootcheck.Firmware {
		p.Entry = n
	}
	return p
}
