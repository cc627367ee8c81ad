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
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/kexec"
	"github.com/abboot/abboot/pkg/measure"
	"github.com/abboot/abboot/pkg/shutdown"
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
	// Load stages a UKI for kexec: b is the content of the file at path
	// (kexec.LoadImage). nil turns kexec off.
	Load func(path string, b []byte, editCmdline func(string) string) error
	// Verify, when set, checks a slot's UKI, b, before any handover to it
	// (the init: Secure Boot's db and dbx, pkg/secureboot). The bytes
	// checked are the bytes staged for kexec, never a second read of the
	// file. A slot whose UKI fails is never handed over to, by kexec or by
	// BootNext: it is marked bad (rule 4) and the decision made again.
	Verify func(b []byte) error
	// Measure, when set, hashes a kexec target's UKI, b, for the TPM
	// (measure.Prepare) on as many CPUs as cpus holds tokens, until ctx
	// is cancelled; Start extends PCR 11 with the result right before the
	// kexec. With more than one CPU it runs while Verify does, on all CPUs
	// but one, which the check keeps for itself, then on all while Load
	// runs, and it is cancelled when the check fails; with one CPU it runs
	// after them, and only for a UKI that passed. Either way it never
	// slows the check down, nor a refused UKI's fallback.
	Measure func(ctx context.Context, b []byte, cpus chan struct{}) (*measure.Measurement, error)
	// Read reads a UKI; nil is os.ReadFile.
	Read func(path string) ([]byte, error)
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
	Image   []byte // its content, as staged (and verified, with Env.Verify)
	Entry   uint16 // the target's Boot####, for a BootNext handover
	// Measurement is the kexec target's UKI hashed for PCR 11 (Env.Measure),
	// nil without one; measureErr is why there is none.
	Measurement *measure.Measurement
	measureErr  error
	hashed      time.Duration // how long Env.Measure took
	waited      time.Duration // how long the plan waited for it after Load
	decide      func(bootcheck.Input) bootcheck.Decision
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
	a := p.Decision.Action
	if a == bootcheck.Kexec || (a == bootcheck.Firmware && e.Verify != nil && e.ESPDir != "") {
		p.UKI = filepath.Join(e.ESPDir, t.UKIPath())
		b, err := e.read(p.UKI)
		var measured func()
		var cpus chan struct{} // the hashing's CPU tokens, while it overlaps the check
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel() // stops a measurement still running: the UKI was refused, or Load failed
		if n := runtime.GOMAXPROCS(0); err == nil && a == bootcheck.Kexec && e.Measure != nil && n > 1 {
			cpus = make(chan struct{}, n)
			for range n - 1 {
				cpus <- struct{}{}
			}
			measured = p.measure(ctx, e.Measure, b, cpus)
		}
		if err == nil && e.Verify != nil {
			start := time.Now()
			if err = e.Verify(b); err != nil {
				// Rule 4: a UKI the firmware would refuse is bad, by
				// either way of handing over.
				e.Log.Error("verify", err, "slot", t, "action", a, "bytes", len(b), "ms", time.Since(start).Milliseconds(), "marked", "bad")
				in.State = in.State.MarkBad(t)
				q := e.plan(in, decide)
				q.Unsaved = true
				return q
			}
			e.Log.Log("verify", "slot", t, "bytes", len(b), "ms", time.Since(start).Milliseconds(), "result", "ok")
		}
		if cpus != nil {
			cpus <- struct{}{} // the check's CPU
		}
		if err == nil && a == bootcheck.Kexec {
			err = e.Load(p.UKI, b, func(c string) string { return bootparam.WithHandover(c, string(t)) })
		}
		if err != nil {
			e.Log.Error("handover", err, "slot", t, "action", a)
			return e.plan(without(in, a), decide)
		}
		p.Image = b
		if a == bootcheck.Kexec && e.Measure != nil {
			if measured == nil {
				measured = p.measure(ctx, e.Measure, b, nil)
			}
			measured()
		}
	}
	if a == bootcheck.Firmware {
		n, ok := bootentry.Find(e.Entries, t)
		if !ok {
			e.Log.Error("handover", errNoEntry, "slot", t, "action", "firmware")
			return e.plan(without(in, bootcheck.Firmware), decide)
		}
		p.Entry = n
	}
	return p
}

// measure starts prepare(ctx, b, cpus) and returns a function that waits
// for it and keeps its result in p.
func (p *Plan) measure(ctx context.Context, prepare func(context.Context, []byte, chan struct{}) (*measure.Measurement, error), b []byte, cpus chan struct{}) (wait func()) {
	done := make(chan struct{})
	start := time.Now()
	go func() {
		p.Measurement, p.measureErr = prepare(ctx, b, cpus)
		p.hashed = time.Since(start)
		close(done)
	}()
	return func() {
		w := time.Now()
		<-done
		p.waited = time.Since(w)
	}
}

func (e *Env) read(path string) ([]byte, error) {
	if e.Read != nil {
		return e.Read(path)
	}
	return os.ReadFile(path)
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
	q.Unsaved = q.Unsaved || p.Unsaved
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
// set to p.Entry and a firmware reboot. Right before a kexec it extends
// PCR 11 with the plan's Measurement, the UKI as the target's stub would
// have measured it (pkg/measure): a kexec runs no stub and resets no PCR.
// A plan that falls back to a firmware reboot after that resets the PCRs
// anyway. A failed measurement is logged and the kexec goes on; PCR 11
// then matches no prediction.
// Where systemd is PID 1 (abctl on a running OS), Start asks systemd for
// the kexec or the reboot instead of acting itself, so that the services
// stop and the file systems are unmounted before the kernel is replaced
// (pkg/shutdown), and returns nil once systemd has taken the job.
// Otherwise (the init, an OS without systemd) it acts at once and returns
// only on failure. Either way the kexec was staged and BootNext is set
// before anything stops, so a refused kexec still falls back to BootNext.
func Start(v *efivar.Vars, p *Plan) error {
	clean := shutdown.Systemd()
	switch p.Decision.Action {
	case bootcheck.Kexec:
		measureStart(p)
		if clean {
			return shutdown.Start(context.Background(), shutdown.Kexec)
		}
		return kexec.Exec()
	case bootcheck.Firmware:
		if err := v.SetBootNext(p.Entry); err != nil {
			return err
		}
		if clean {
			return shutdown.Start(context.Background(), shutdown.Reboot)
		}
		unix.Sync()
		return fmt.Errorf("reboot: %w", unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART))
	}
	return fmt.Errorf("%v is no handover", p.Decision.Action)
}

// measureStart extends PCR 11 with p's measurement and logs it: its ms is
// what measuring added to the handover (the wait for the hashing after
// the UKI was verified and staged, then the extends), hash_ms the hashing
// itself, which overlaps the check on a machine with more than one CPU.
func measureStart(p *Plan) {
	err := p.measureErr
	if p.Measurement != nil {
		start := time.Now()
		if err = p.Measurement.Extend(); err == nil {
			event.Log("measure", "slot", p.Decision.Target, "pcr", measure.PCR, "banks", p.Measurement.BankNames(),
				"hash_ms", p.hashed.Milliseconds(), "ms", (p.waited + time.Since(start)).Milliseconds(), "result", "ok")
			return
		}
	}
	if err != nil && !errors.Is(err, measure.ErrNoTPM) {
		event.Error("measure", err, "slot", p.Decision.Target, "pcr", measure.PCR)
	}
}
