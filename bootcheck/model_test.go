package bootcheck

// An exhaustive model of abboot's boots: every reachable state of two slots
// with small counters, against an adversarial firmware, power and kernels,
// checked against the properties docs/design.md's rules promise.
//
// A model node is the slot state in the store, what each slot's image does
// when booted (fixed, except that an install replaces the other slot's
// image), BootNext, and ghost variables that record which boot a counted
// try belongs to. The machine is either about to run the firmware (reset),
// about to start a kernel by kexec, or in the rescue shell. One edge is one
// kernel start and everything up to the next reset or kexec:
//
//   - the firmware starts either slot's UKI (through BootNext, a Boot####
//     entry, a reset BootOrder or the fallback copy: the model lets it pick
//     either slot, honouring or ignoring BootNext);
//   - a kernel that panics (or hangs) before init resets the machine;
//   - an init decides with kexec and BootNext each allowed or not (the
//     command line says abboot.kexec=0, efivars are missing); the power may
//     fail before or after each write; a kexec may be refused at run time
//     (the init then decides again, as Decide documents);
//   - the running slot's root may fail (rule 4: the init decides again);
//   - an OS that boots either commits (slotstate.Commit; then the operator
//     may install a new image of any kind into the other slot) or never
//     commits (failed health check, hang after init: reset);
//   - an OS may crash after it booted, always or only sometimes (issue 13:
//     a committed slot whose root has a bad block, a driver that panics):
//     the kernel leaves a crash record naming the slot (pstore) and resets.
//     The next init reads the records, removes them, and passes them to
//     Decide (Input.Crashed); the power may fail before or after the
//     removal.
//
// Bounds: priorities 0..3 and tries 0..3 in the initial states, crash
// counts 0..slotstate.MaxCrashes and a pending record on the slots whose
// image crashes, every combination of images, markers and BootNext a
// selector could have left; the crash limit K is a parameter (TestModel
// runs 1..MaxCrashes);
// installs that would give a priority above 3 are not explored (Commit may
// still raise one to 4).
//
// Safety properties are checked on every decision of every edge (see
// check); a try is tracked by ghost variables from the write that counts
// it to the kernel start that uses it. Liveness (property 1) is checked on
// the "live" edges only, which leave out what no selector can beat: the
// power failing again and again, a firmware that by itself keeps starting a
// kernel that dies before init or a slot that is not bootable (see
// liveBoot), and boots on which BootNext cannot be set at all. On those,
// every run of kernel starts without progress (a good or committed OS
// runs, or the rescue shell) must be finite and at most bound kernel
// starts long, and hold at most K crashed boots of any one slot while it
// is the preferred one (property 7): it is left by the next boot. (It may
// still crash as the fallback when the slot preferred over it does not
// come up, or on a boot where the firmware ignored BootNext.) A committed slot that crashes while no other slot is bootable, or
// only one over the crash limit itself, is progress: it is the best the
// machine has (never strand it).

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

const (
	maxPriority = 3
	maxTries    = 3
)

// behavior is what a slot's image does when it is started.
type behavior uint8

const (
	good      behavior = iota // boots; its OS passes the health check and commits
	panics                    // the kernel dies or hangs before init (panic=N, watchdog)
	rootFails                 // init runs, the root cannot come up (rule 4)
	noCommit                  // init runs, the OS boots but never commits (health check fails, hangs later)
	crashes                   // init runs, the OS boots, then the kernel crashes and leaves a record
	flaky                     // as crashes or as good, each time it boots
	nBehaviors
)

func (b behavior) String() string {
	return [...]string{"good", "panics", "root-fails", "no-commit", "crashes", "flaky"}[b]
}

// canCrash reports an image whose OS may crash after it booted.
func (b behavior) canCrash() bool { return b == crashes || b == flaky }

// record is the crash record pstore holds for one slot's crashed boot.
type record uint8

const (
	noRecord record = iota
	pending         // not counted yet
	// counted is a ghost: the record is still there, but a write
	// already counted it (only when the init removes records after the
	// write, which the real init does not do).
	counted
)

func idx(s slot.Slot) int {
	if s == slot.B {
		return 1
	}
	return 0
}

type node struct {
	st       slotstate.State
	beh      [2]behavior
	bootNext slot.Slot // BootNext, as the firmware finds it at the next reset
	// fresh is a ghost: the slot whose try a BootNext handover counted,
	// not used yet. A start of that slot uses it when its kernel dies
	// before init, or when its init's decision takes effect (a power cut
	// before the init's write leaves it: nothing happened). Any other
	// init's decision that takes effect spends it.
	fresh slot.Slot
	// kexec is set when the machine is about to start that slot's kernel
	// by kexec, with abboot.handover on its command line; kexecCredit is
	// a ghost: the handover counted its try.
	kexec       slot.Slot
	kexecCredit bool
	rescue      bool // the rescue shell runs: terminal
	// records are the crash records in pstore, per slot (idx): one per
	// slot at most; crashed boots whose records pile up count once.
	records [2]record
}

func (n node) String() string {
	var b strings.Builder
	for _, s := range slot.All {
		a := n.st.Get(s)
		ok := ""
		if a.Successful {
			ok = " ok"
		}
		if a.Crashes > 0 {
			ok += fmt.Sprintf(" crashed%d", a.Crashes)
		}
		fmt.Fprintf(&b, "%s{p%d t%d%s %v} ", s.Upper(), a.Priority, a.Tries, ok, n.beh[idx(s)])
	}
	fmt.Fprintf(&b, "marker=%q bootnext=%q", n.st.Counted, n.bootNext)
	for _, s := range slot.All {
		if r := n.records[idx(s)]; r != noRecord {
			fmt.Fprintf(&b, " record(%s)=%s", s, [...]string{"", "pending", "counted"}[r])
		}
	}
	if n.kexec != "" {
		fmt.Fprintf(&b, " kexec->%s", n.kexec)
	}
	if n.rescue {
		b.WriteString(" RESCUE")
	}
	return b.String()
}

// An edge is one kernel start. progress marks the starts that end the
// liveness question: an OS runs that is good or committed, or the rescue
// shell. live marks those the liveness check considers (see liveBoot).
// crash names the committed slot whose OS crashed on this start, if any.
type edge struct {
	to             int32
	progress, live bool
	crash          slot.Slot
}

// The properties; a violation names one.
const (
	propRules   = 0 // the decision is well formed and changes only what the rules allow
	propGood    = 1 // a good slot (or rescue when none) is reached within the bound; no rescue while a slot can boot
	propTries0  = 2 // a trial slot with tries 0 is never chosen
	propOnce    = 3 // a try is counted exactly once per boot of a trial slot
	propKept    = 4 // a committed slot stays bootable unless its root fails
	propSteady  = 5 // a steady-state boot writes nothing; Write says whether State changed
	propRescue  = 6 // nothing bootable: rescue, never a non-bootable slot
	propLeft    = 7 // a committed slot that always crashes is left within K+1 of its boots
	propCrashOK = 8 // a committed slot that crashed fewer than K times in a row stays preferred
	propCrash1  = 9 // a crash count rises only by crash records not counted yet
	nProperties = 10
)

// anyStep asks step for the step to a node rather than a violation.
const anyStep = -1

var propNames = [nProperties]string{
	"0 (well-formed decision)",
	"1 (good slot reached within the bound)",
	"2 (tries 0 never chosen)",
	"3 (each try counted exactly once)",
	"4 (committed slot never lost)",
	"5 (steady state writes nothing)",
	"6 (nothing bootable: rescue)",
	"7 (an always-crashing committed slot is left within K+1 boots)",
	"8 (a committed slot with fewer than K crashes in a row is kept)",
	"9 (no crash record counted twice)",
}

type checker struct {
	decide func(Input) Decision
	limit  int // K, Input.CrashLimit
	// removeLate makes the init remove the crash records after its
	// write instead of before its decision: the ordering the real init
	// must not use (see TestModelCatchesBrokenDecide).
	removeLate bool
	ids        map[node]int32
	nodes      []node
	parent     []int32
	edges      [][]edge
	// first violation per property: node where it was found, and a
	// message (filled in with labels once exploration ends).
	violNode [nProperties]int32
	violMsg  [nProperties]string
	maxSteps int // longest path, in kernel starts, to progress
}

// over reports a committed slot that crashed on K boots in a row.
func (c *checker) over(a slotstate.Attrs) bool {
	return c.limit > 0 && a.Committed() && a.Crashes >= c.limit
}

func newChecker(decide func(Input) Decision, limit int) *checker {
	c := &checker{decide: decide, limit: limit, ids: map[node]int32{}}
	for i := range c.violNode {
		c.violNode[i] = -1
	}
	return c
}

// expansion runs one node's edges. With labels it describes each step;
// without, it only records where edges go, for speed.
type expansion struct {
	c      *checker
	labels bool
	emit   func(to node, e edge, desc string)
	bad    func(prop int, msg func() string)
}

func (x *expansion) f(format string, args ...any) string {
	if !x.labels {
		return ""
	}
	return fmt.Sprintf(format, args...)
}

// liveBoot reports whether the liveness check lets the firmware start k
// from n. It may honour BootNext, or ignore it and start any slot whose
// kernel reaches init and that is bootable (or any whose kernel reaches
// init, when none is bootable). Excluded are a firmware that keeps starting
// a kernel that dies before init, or a slot abboot does not boot, by
// itself: no selector runs then, nothing can count those boots, and the
// init's repair of the entries and the fallback copy (rule 8) is what
// stops them. Excluded too is a firmware that ignores BootNext and starts,
// by itself, a slot whose OS crashes while another bootable slot does not
// crash: when kexec is refused as well, no
// selector can keep it from crashing that slot forever (the crash count
// saturates, so those boots write no slot state).
func liveBoot(n node, k slot.Slot) bool {
	if n.bootNext == k {
		return true
	}
	pick := func(want func(slot.Slot) bool) []slot.Slot {
		var c []slot.Slot
		for _, s := range slot.All {
			if want(s) {
				c = append(c, s)
			}
		}
		return c
	}
	cand := pick(func(s slot.Slot) bool { return n.beh[idx(s)] != panics && n.st.Get(s).Bootable() })
	if calm := pick(func(s slot.Slot) bool { return slices.Contains(cand, s) && !n.beh[idx(s)].canCrash() }); n.bootNext != "" && len(calm) > 0 {
		cand = calm
	}
	if len(cand) == 0 {
		cand = pick(func(s slot.Slot) bool { return n.beh[idx(s)] != panics })
	}
	return len(cand) == 0 || slices.Contains(cand, k)
}

func (x *expansion) expand(n node) {
	if n.rescue {
		return
	}
	if n.kexec != "" {
		base := n
		base.kexec, base.kexecCredit = "", false
		x.start(base, n.kexec, true, n.kexecCredit, true, x.f("kexec starts %s", n.kexec))
		return
	}
	for _, k := range slot.All {
		base := n
		base.bootNext = "" // the firmware deletes BootNext once read (UEFI 2.10 §3.1.2)
		how := ""
		switch n.bootNext {
		case "":
		case k:
			how = " honouring BootNext"
		default:
			how = " ignoring BootNext=" + string(n.bootNext)
		}
		x.start(base, k, false, n.fresh == k, liveBoot(n, k), x.f("firmware starts %s%s", k, how))
	}
}

// start is one kernel start of slot k.
func (x *expansion) start(base node, k slot.Slot, handover, credit, live bool, desc string) {
	if base.beh[idx(k)] == panics {
		if credit {
			base.fresh = "" // this start used the counted try
		}
		x.emit(base, edge{live: live}, desc+"; kernel panics before init")
		return
	}
	// The init reads the crash records and removes them before it
	// decides, so that a power cut can lose a crash but never let it be
	// counted twice (unless the checker tries the other order).
	given := base.records
	var crashed []slot.Slot
	for _, s := range slot.All {
		if given[idx(s)] != noRecord {
			crashed = append(crashed, s)
		}
	}
	if crashed != nil && !x.c.removeLate {
		x.emit(base, edge{}, desc+"; init reads the crash records, power cut before it removes them")
		base.records = [2]record{}
		desc += x.f("; init reads and removes the crash records of %v", crashed)
	}
	for _, kexec := range []bool{true, false} {
		for _, fw := range []bool{true, false} {
			r := &initRun{x: x, base: base, k: k, credit: credit, orig: base.st, given: given, live: live && fw}
			in := Input{State: base.st, Running: k, Handover: handover, KexecAllowed: kexec, FirmwareAllowed: fw, Crashed: crashed, CrashLimit: x.c.limit}
			r.decide(in, base.st, desc)
		}
	}
}

// initRun is one run of slot k's init.
type initRun struct {
	x      *expansion
	base   node // the node the boot started from, BootNext consumed, fresh as the decisions so far left it
	k      slot.Slot
	credit bool            // ghost: the handover that started this kernel counted its try
	orig   slotstate.State // the store when the init started
	given  [2]record       // the crash records the init read
	live   bool
}

// decs is how many tries slot s lost from orig to st, not counting a
// mark bad (the crash limit may have raised its priority meanwhile).
func (r *initRun) decs(st slotstate.State, s slot.Slot) int {
	a, b := r.orig.Get(s), st.Get(s)
	if b.Priority == 0 || a.Successful != b.Successful {
		return 0
	}
	return a.Tries - b.Tries
}

// reset returns the node after a reset with st in the store.
func (r *initRun) reset(st slotstate.State) node {
	n := r.base
	n.st = st
	return n
}

func (r *initRun) decide(in Input, stored slotstate.State, desc string) {
	x := r.x
	d := x.c.decide(in)
	desc += x.f("; init %s (kexec=%v bootnext=%v handover=%v root-failed=%v) decides %v %s reason=%s write=%v",
		r.k, in.KexecAllowed, in.FirmwareAllowed, in.Handover, in.RootFailed, d.Action, d.Target, d.Reason, d.Write)
	if !r.check(in, d, desc) {
		return
	}
	cut := "; power cut"
	if d.Write {
		cut = "; power cut before the write"
	}
	x.emit(r.reset(stored), edge{}, desc+cut)
	// From here the decision takes effect. This boot has used its
	// counted try; a try counted for a slot not booted is spent; a
	// BootNext handover's try is there for that slot's next start.
	cur := stored
	if d.Write {
		cur = d.State
	}
	r.base.fresh = ""
	if d.Action == Firmware && r.decs(cur, d.Target) == 1 {
		r.base.fresh = d.Target
	}
	if d.Write {
		n := r.reset(cur)
		for _, s := range slot.All {
			if n.records[idx(s)] != noRecord && cur.Get(s).Crashes > r.orig.Get(s).Crashes {
				n.records[idx(s)] = counted
			}
		}
		x.emit(n, edge{}, desc+"; written, power cut")
	}
	if x.c.removeLate && r.base.records != [2]record{} {
		r.base.records = [2]record{}
		desc += "; init removes the crash records"
	}
	k, t := r.k, d.Target
	switch d.Action {
	case Continue:
		if a := r.orig.Get(k); !a.Successful && !r.credit && r.decs(cur, k) == 0 {
			x.bad(propOnce, func() string {
				return desc + ": try skipped: the OS of trial slot " + string(k) + " runs, no try was counted for this boot"
			})
		}
		beh := r.base.beh[idx(k)]
		if beh.canCrash() {
			// The kernel dies after the OS booted and leaves a
			// record naming k. A committed slot crashing with nothing
			// better to boot is the machine's best: progress.
			n := r.reset(cur)
			n.records[idx(k)] = pending
			a, oa := cur.Get(k), cur.Get(k.Other())
			e := edge{progress: a.Committed() && !(oa.Bootable() && !x.c.over(oa)), live: r.live}
			if best, _ := cur.Best(k); a.Committed() && !e.progress && best == k {
				e.crash = k // property 7 counts the crashes of the preferred slot
			}
			x.emit(n, e, desc+x.f("; OS runs, the kernel crashes, its record names %s", k))
		}
		switch beh {
		case rootFails:
			if !in.RootFailed {
				in2 := in
				in2.State, in2.RootFailed, in2.Crashed = cur, true, nil
				r.decide(in2, cur, desc+x.f("; root of %s fails", k))
			}
		case good, flaky:
			x.emit(r.reset(cur), edge{progress: true, live: r.live}, desc+"; OS runs, power cut before commit")
			committed := cur.Commit(k)
			x.emit(r.reset(committed), edge{progress: true, live: r.live}, desc+"; OS runs and commits")
			o := k.Other()
			for tries := 1; tries <= maxTries; tries++ {
				st := committed.MarkBad(o).SetActive(o, tries)
				if st.Get(o).Priority > maxPriority {
					break
				}
				for b := range nBehaviors {
					n := r.reset(st)
					n.beh[idx(o)] = b
					x.emit(n, edge{progress: true, live: r.live}, desc+x.f("; OS commits, installs a %v image into %s with %d tries", b, o, tries))
				}
			}
		case noCommit:
			x.emit(r.reset(cur), edge{progress: cur.Get(k).Successful, live: r.live}, desc+"; OS runs, never commits, reset")
		}
	case Kexec:
		n := r.reset(cur)
		n.kexec, n.kexecCredit = t, r.decs(cur, t) == 1
		x.emit(n, edge{live: r.live}, desc+"; kexec")
		in2 := in
		in2.KexecAllowed = false
		r.decide(in2, cur, desc+"; kexec refused")
	case Firmware:
		n := r.reset(cur)
		n.bootNext = t
		x.emit(n, edge{live: r.live}, desc+"; BootNext, reboot")
	case Rescue:
		n := r.reset(cur)
		n.rescue = true
		x.emit(n, edge{progress: true, live: r.live}, desc+"; rescue shell")
	}
}

// check checks one decision against the rules. It returns false when the
// decision cannot be acted on.
func (r *initRun) check(in Input, d Decision, desc string) bool {
	k, o := r.k, r.k.Other()
	fail := func(prop int, format string, args ...any) {
		r.x.bad(prop, func() string { return desc + ": " + fmt.Sprintf(format, args...) })
	}
	if err := d.State.Validate(); err != nil {
		fail(propRules, "invalid state: %v", err)
		return false
	}
	if d.Write != (d.State != in.State) {
		fail(propSteady, "Write=%v but the state went %+v -> %+v", d.Write, in.State, d.State)
	}
	switch d.Action {
	case Continue:
		if d.Target != k {
			fail(propRules, "continue to %q, not the running slot", d.Target)
			return false
		}
	case Kexec, Firmware:
		if d.Target != o {
			fail(propRules, "hand over to %q, not the other slot", d.Target)
			return false
		}
		if d.Action == Kexec && !in.KexecAllowed || d.Action == Firmware && !in.FirmwareAllowed {
			fail(propRules, "%v although not allowed", d.Action)
			return false
		}
	case Rescue:
		if d.Target != "" {
			fail(propRules, "rescue with target %q", d.Target)
		}
	default:
		fail(propRules, "unknown action %v", d.Action)
		return false
	}
	// Crashes (issue 13). A count rises only by a record this init read
	// and that no write counted before; it falls only by a mark bad. A
	// committed slot preferred before the decision stays preferred
	// unless its count reached K; when it reached K (and the other slot
	// is bootable and not over K), the other slot's priority may rise
	// above it.
	c := r.x.c
	demoted := func(s slot.Slot) bool {
		a, b, ob := in.State.Get(s), d.State.Get(s), d.State.Get(s.Other())
		return c.over(b) && a.Priority >= in.State.Get(s.Other()).Priority && ob.Priority > b.Priority && !c.over(ob)
	}
	limited := demoted(slot.A) || demoted(slot.B)
	for _, s := range slot.All {
		a, b := r.orig.Get(s), d.State.Get(s)
		allowed := 0
		if r.given[idx(s)] == pending {
			allowed = 1
		}
		if b.Crashes-a.Crashes > allowed {
			fail(propCrash1, "slot %s's crash count %d -> %d, from %v crash records not counted yet", s, a.Crashes, b.Crashes, allowed)
		}
		oa, ob := in.State.Get(s.Other()), d.State.Get(s.Other())
		if a := in.State.Get(s); a.Committed() && a.Priority > oa.Priority && !c.over(b) && !(s == k && in.RootFailed) &&
			!(b.Committed() && b.Priority > ob.Priority) {
			fail(propCrashOK, "committed slot %s with %d crashes in a row (limit %d) no longer preferred: %v, %v -> %v, %v", s, b.Crashes, c.limit, a, oa, b, ob)
		}
	}
	for _, s := range slot.All {
		a, b := in.State.Get(s), d.State.Get(s)
		if b.Crashes < a.Crashes && b != slotstate.Bad {
			fail(propRules, "slot %s's crash count cleared by a boot: %v -> %v", s, a, b)
		}
		a.Crashes, b.Crashes = 0, 0
		if limited && a.Priority > 0 && b.Priority > 0 {
			b.Priority = a.Priority
		}
		switch {
		case a.Failed() && s != d.Target && d.Action != Rescue && b != slotstate.Bad:
			fail(propRules, "failed trial %s passed over but not marked bad: %v -> %v", s, a, b)
		case a == b:
		case s == k && in.RootFailed && b == slotstate.Bad:
		case s != d.Target && a.Failed() && b == slotstate.Bad: // a failed trial marked bad
		case a.Successful && a.Priority > 0 && !(b.Successful && b.Priority > 0):
			fail(propKept, "committed slot %s lost: %v -> %v", s, a, b)
		case a.Priority != b.Priority || a.Successful != b.Successful || a.Successful:
			fail(propRules, "slot %s changed beyond the rules: %v -> %v", s, a, b)
		case b.Tries > a.Tries:
			fail(propOnce, "slot %s tries raised %d -> %d: a counted try refunded", s, a.Tries, b.Tries)
		case a.Tries-b.Tries > 1:
			fail(propOnce, "slot %s counted twice in one decision: tries %d -> %d", s, a.Tries, b.Tries)
		case s != d.Target:
			fail(propOnce, "slot %s counted but not booted: tries %d -> %d", s, a.Tries, b.Tries)
		}
	}
	if d.Action == Kexec || d.Action == Firmware {
		if a := in.State.Get(o); !a.Successful && a.Tries-d.State.Get(o).Tries != 1 {
			fail(propOnce, "try skipped: hands over to trial slot %s without counting its try (%v -> %v)", o, a, d.State.Get(o))
		}
	}
	if r.credit && d.State.Get(k).Tries < in.State.Get(k).Tries && d.State.Get(k).Priority > 0 {
		fail(propOnce, "try counted twice: %s was started by a handover that counted this try, and its init counted again", k)
	}
	if r.credit && !in.RootFailed && d.Action != Continue {
		fail(propOnce, "try skipped: %s was started by a handover that counted its try, and its init does not boot it", k)
	}
	if d.Action != Rescue {
		a := in.State.Get(d.Target)
		switch {
		case d.Target == k && in.RootFailed:
			fail(propRescue, "boots %s although its root failed", k)
		case a.Priority == 0:
			fail(propRescue, "boots %s, which is not bootable: %v", d.Target, a)
		case !a.Successful && a.Tries == 0 && !(d.Target == k && r.credit):
			fail(propTries0, "chooses trial slot %s with tries 0", d.Target)
		}
	}
	eligible := func(s slot.Slot) bool {
		a := in.State.Get(s)
		if s == k && in.RootFailed {
			return false
		}
		return a.Bootable() || s == k && r.credit && a.Priority > 0
	}
	anyOK := eligible(slot.A) || eligible(slot.B)
	switch {
	case !anyOK && d.Action != Rescue:
		fail(propRescue, "no slot is bootable, yet %v %s", d.Action, d.Target)
	case anyOK && d.Action == Rescue && (in.KexecAllowed || in.FirmwareAllowed || eligible(k)):
		fail(propGood, "rescue although a slot can be booted")
	}
	if a, b := in.State.Get(k), in.State.Get(o); in.State.Counted == "" && !in.Handover && !in.RootFailed && len(in.Crashed) == 0 &&
		a.Successful && a.Priority > 0 && !b.Failed() && (!b.Bootable() || b.Priority <= a.Priority) &&
		!(c.over(a) && b.Bootable() && !c.over(b)) && (d.Action != Continue || d.Write) {
		fail(propSteady, "steady-state boot of committed slot %s: %v write=%v", k, d.Action, d.Write)
	}
	return true
}

// initial lists the states a selector and an operator could have left: any
// counters within the bounds, any images, and a marker (with BootNext set
// or not) only naming a trial slot a selector would have handed over to.
// Only a slot whose image crashes can have crashed: its crash count is
// anything when committed, and a record of it may be pending.
func initial() []node {
	var attrs []slotstate.Attrs
	for p := 0; p <= maxPriority; p++ {
		for t := 0; t <= maxTries; t++ {
			attrs = append(attrs, slotstate.Attrs{Priority: p, Tries: t}, slotstate.Attrs{Priority: p, Tries: t, Successful: true})
		}
	}
	var out []node
	for _, a := range attrs {
		for _, b := range attrs {
			st := slotstate.State{A: a, B: b}
			for ba := range nBehaviors {
				for bb := range nBehaviors {
					for _, n := range crashHistories(node{st: st, beh: [2]behavior{ba, bb}}) {
						out = append(out, markers(n)...)
					}
				}
			}
		}
	}
	return out
}

// crashHistories returns n with every crash count and pending record its
// images allow.
func crashHistories(n node) []node {
	out := []node{n}
	for _, s := range slot.All {
		if !n.beh[idx(s)].canCrash() {
			continue
		}
		var more []node
		for _, m := range out {
			for c := 0; c <= slotstate.MaxCrashes; c++ {
				a := m.st.Get(s)
				if c > 0 && !a.Committed() {
					break
				}
				a.Crashes = c
				m.st = m.st.With(s, a)
				m.records[idx(s)] = noRecord
				more = append(more, m)
				m.records[idx(s)] = pending
				more = append(more, m)
			}
		}
		out = more
	}
	return out
}

// markers returns n and n with each marker a selector could have left.
func markers(n node) []node {
	st := n.st
	out := []node{n}
	for _, s := range slot.All {
		x, y := st.Get(s), st.Get(s.Other())
		if x.Successful || x.Priority == 0 || x.Tries == maxTries || y.Bootable() && y.Priority >= x.Priority {
			continue
		}
		m := n
		m.st.Counted, m.fresh = s, s
		out = append(out, m)
		m.bootNext = s
		out = append(out, m)
	}
	return out
}

func (c *checker) id(n node) (int32, bool) {
	if i, ok := c.ids[n]; ok {
		return i, false
	}
	i := int32(len(c.nodes))
	c.ids[n] = i
	c.nodes = append(c.nodes, n)
	c.parent = append(c.parent, -1)
	c.edges = append(c.edges, nil)
	return i, true
}

// explore visits every node reachable from the initial ones, breadth
// first, recording the first violation of each property.
func (c *checker) explore() {
	var queue []int32
	for _, n := range initial() {
		if i, isNew := c.id(n); isNew {
			queue = append(queue, i)
		}
	}
	for len(queue) > 0 {
		from := queue[0]
		queue = queue[1:]
		x := &expansion{c: c}
		x.emit = func(to node, e edge, _ string) {
			i, isNew := c.id(to)
			if isNew {
				c.parent[i] = from
				queue = append(queue, i)
			}
			e.to = i
			for j, old := range c.edges[from] {
				if old.to == i && old.progress == e.progress && old.crash == e.crash {
					c.edges[from][j].live = old.live || e.live
					return
				}
			}
			c.edges[from] = append(c.edges[from], e)
		}
		x.bad = func(prop int, _ func() string) {
			if c.violNode[prop] < 0 {
				c.violNode[prop] = from
			}
		}
		x.expand(c.nodes[from])
	}
	for p, n := range c.violNode {
		if n >= 0 {
			c.violMsg[p] = c.describe(n, p)
		}
	}
}

// step describes the step from node `from` to node `to`, re-running it
// with labels; with prop >= 0 it describes that property's violation at
// from instead.
func (c *checker) step(from, to int32, prop int, live bool) string {
	var got string
	x := &expansion{c: c, labels: true}
	x.emit = func(n node, e edge, desc string) {
		if got == "" && prop < 0 && c.ids[n] == to && (!live || e.live && !e.progress) {
			got = desc
		}
	}
	x.bad = func(p int, msg func() string) {
		if got == "" && p == prop {
			got = "VIOLATION at " + msg()
		}
	}
	x.expand(c.nodes[from])
	return got
}

// trace lists the steps from an initial node to node i.
func (c *checker) trace(i int32) []string {
	var path []int32
	for j := i; j >= 0; j = c.parent[j] {
		path = append([]int32{j}, path...)
	}
	lines := []string{"start: " + c.nodes[path[0]].String()}
	for j := 1; j < len(path); j++ {
		lines = append(lines, c.step(path[j-1], path[j], anyStep, false), "  now: "+c.nodes[path[j]].String())
	}
	return lines
}

func (c *checker) describe(i int32, prop int) string {
	return strings.Join(append(c.trace(i), c.step(i, -1, prop, false)), "\n")
}

// triesLeft is the sum of the tries of the bootable trial slots.
func triesLeft(n node) int {
	t := 0
	for _, s := range slot.All {
		if a := n.st.Get(s); !a.Successful && a.Priority > 0 {
			t += a.Tries
		}
	}
	return t
}

// bound is the most kernel starts the liveness check allows from n before
// a good OS, a committed OS or the rescue shell runs: two per try left
// (the selector's start and the trial's own), one for a BootNext handover
// that does not arrive, two for a handover to a slot whose root then fails
// and its handover back, and the start that makes progress; and for each
// slot whose image crashes, three per crashed boot and per handover away
// from it (the firmware may start the other slot, whose init hands over by
// a BootNext the firmware ignores, and then by kexec).
func (c *checker) bound(n node) int {
	b := 2*triesLeft(n) + 4
	for _, s := range slot.All {
		if n.beh[idx(s)].canCrash() {
			b += 3 * (c.limit + 1)
		}
	}
	return b
}

// precondition is when liveness can be asked of abboot at all: some slot's
// kernel reaches init, some slot's OS need not crash, and no committed
// slot's kernel dies before init (its boots are never counted, by the cgpt
// semantics of successful).
func precondition(n node) bool {
	if n.beh[0] == panics && n.beh[1] == panics || n.beh[0].canCrash() && n.beh[1].canCrash() {
		return false
	}
	for _, s := range slot.All {
		if a := n.st.Get(s); n.beh[idx(s)] == panics && a.Successful && a.Priority > 0 {
			return false
		}
	}
	return true
}

// liveness computes, for every node that meets the precondition, the
// longest run of live kernel starts without progress, and fails on a cycle
// of them (an infinite loop of failing boots) or a run longer than bound.
//
// It also computes, per slot, the most crashed boots of that committed
// slot such a run holds, and fails when one exceeds K (property 7): K
// crashed boots and the boot whose init leaves the slot.
func (c *checker) liveness() {
	const unseen, onPath, done = 0, 1, 2
	color := make([]uint8, len(c.nodes))
	longest := make([]int, len(c.nodes))
	crashed := make([][2]int, len(c.nodes))
	// next and crashNext: the next node on a longest run, and on a run
	// with the most crashes of each slot; -1 at its end.
	next := make([]int32, len(c.nodes))
	crashNext := make([][2]int32, len(c.nodes))
	var stack []int32
	var visit func(i int32) bool
	visit = func(i int32) bool {
		color[i] = onPath
		next[i], crashNext[i] = -1, [2]int32{-1, -1}
		stack = append(stack, i)
		for _, e := range c.edges[i] {
			if !e.live {
				continue
			}
			l, cr := 1, [2]int{}
			if e.crash != "" {
				cr[idx(e.crash)] = 1
			}
			if !e.progress {
				switch color[e.to] {
				case onPath:
					c.cycle(stack, e.to)
					return false
				case unseen:
					if !visit(e.to) {
						return false
					}
				}
				l += longest[e.to]
				for j := range cr {
					cr[j] += crashed[e.to][j]
				}
			}
			if l > longest[i] {
				longest[i] = l
				if !e.progress {
					next[i] = e.to
				}
			}
			for j := range cr {
				if cr[j] > crashed[i][j] {
					crashed[i][j] = cr[j]
					if !e.progress {
						crashNext[i][j] = e.to
					}
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = done
		return true
	}
	for i := range c.nodes {
		n := c.nodes[i]
		if !precondition(n) {
			continue
		}
		if color[i] == unseen && !visit(int32(i)) {
			return
		}
		c.maxSteps = max(c.maxSteps, longest[i])
		if longest[i] > c.bound(n) && c.violNode[propGood] < 0 {
			c.violNode[propGood] = int32(i)
			c.violMsg[propGood] = fmt.Sprintf("%s\nfrom here %d kernel starts can pass without progress, bound %d\n%s",
				strings.Join(c.trace(int32(i)), "\n"), longest[i], c.bound(n), c.describeRun(int32(i), func(j int32) int32 { return next[j] }))
		}
		for _, s := range slot.All {
			if cr := crashed[i][idx(s)]; cr > c.limit && c.violNode[propLeft] < 0 {
				c.violNode[propLeft] = int32(i)
				c.violMsg[propLeft] = fmt.Sprintf("%s\nfrom here committed slot %s can crash on %d boots before it is left, limit %d\n%s",
					strings.Join(c.trace(int32(i)), "\n"), s, cr, c.limit, c.describeRun(int32(i), func(j int32) int32 { return crashNext[j][idx(s)] }))
			}
		}
	}
}

// describeRun describes the live run from node i that next gives.
func (c *checker) describeRun(i int32, next func(int32) int32) string {
	lines := []string{"such a run:"}
	for j, k := i, next(i); k >= 0; j, k = k, next(k) {
		lines = append(lines, c.step(j, k, anyStep, true), "  now: "+c.nodes[k].String())
	}
	return strings.Join(lines, "\n")
}

// cycle reports a loop of live kernel starts without progress: property 7
// when a committed slot crashes in it, else property 1.
func (c *checker) cycle(stack []int32, to int32) {
	at := 0
	for stack[at] != to {
		at++
	}
	loop := append(stack[at:len(stack):len(stack)], to)
	prop := propGood
	for j := 1; j < len(loop); j++ {
		for _, e := range c.edges[loop[j-1]] {
			if e.to == loop[j] && e.live && !e.progress && e.crash != "" {
				prop = propLeft
			}
		}
	}
	if c.violNode[prop] >= 0 {
		return
	}
	c.violNode[prop] = to
	lines := append(c.trace(to), "LOOP, forever:")
	for j := 1; j < len(loop); j++ {
		lines = append(lines, c.step(loop[j-1], loop[j], anyStep, true), "  now: "+c.nodes[loop[j]].String())
	}
	c.violMsg[prop] = strings.Join(lines, "\n")
}

func (c *checker) run() {
	c.explore()
	c.liveness()
}

func TestModel(t *testing.T) {
	for k := 1; k <= slotstate.MaxCrashes; k++ {
		t.Run(fmt.Sprintf("crash-limit=%d", k), func(t *testing.T) {
			c := newChecker(Decide, k)
			c.run()
			nEdges := 0
			for _, e := range c.edges {
				nEdges += len(e)
			}
			t.Logf("explored %d states, %d distinct transitions; longest run without progress: %d kernel starts", len(c.nodes), nEdges, c.maxSteps)
			for p, msg := range c.violMsg {
				if msg != "" {
					t.Errorf("property %s violated:\n%s", propNames[p], msg)
				}
			}
		})
	}
}

// TestModelCatchesBrokenDecide runs the checker against deliberately broken
// decisions: each property must be able to fail.
func TestModelCatchesBrokenDecide(t *testing.T) {
	// fix recomputes Write after a variant changed the state.
	fix := func(in Input, d Decision) Decision {
		d.Write = d.State != in.State
		return d
	}
	for _, tc := range []struct {
		name       string
		decide     func(Input) Decision
		want       int
		limit      int  // K; 0: slotstate.DefaultCrashLimit
		removeLate bool // the init removes the crash records after its write
	}{
		{
			name: "forgets to count a BootNext handover",
			decide: func(in Input) Decision {
				d := Decide(in)
				if d.Action == Firmware {
					d.State = d.State.With(d.Target, in.State.Get(d.Target))
				}
				return fix(in, d)
			},
			want: propOnce,
		},
		{
			name: "ignores the kexec handover flag",
			decide: func(in Input) Decision {
				in2 := in
				in2.Handover = false
				return fix(in, Decide(in2))
			},
			want: propOnce,
		},
		{
			name: "never clears the marker",
			decide: func(in Input) Decision {
				d := Decide(in)
				if d.State.Counted == "" {
					d.State.Counted = in.State.Counted
				}
				return fix(in, d)
			},
			want: propOnce,
		},
		{
			name: "counts a trial twice",
			decide: func(in Input) Decision {
				d := Decide(in)
				if a := d.State.Get(d.Target); d.Action == Continue && !a.Successful && a.Tries > 0 && a.Tries < in.State.Get(d.Target).Tries {
					a.Tries--
					d.State = d.State.With(d.Target, a)
				}
				return fix(in, d)
			},
			want: propOnce,
		},
		{
			name: "chooses a trial slot out of tries",
			decide: func(in Input) Decision {
				lifted := in
				var was []slot.Slot
				for _, s := range slot.All {
					if a := in.State.Get(s); !a.Successful && a.Priority > 0 && a.Tries == 0 {
						a.Tries = 1
						lifted.State = lifted.State.With(s, a)
						was = append(was, s)
					}
				}
				d := Decide(lifted)
				for _, s := range was {
					a := d.State.Get(s)
					a.Tries = 0
					d.State = d.State.With(s, a)
				}
				return fix(in, d)
			},
			want: propTries0,
		},
		{
			name: "loses the committed slot when handing over",
			decide: func(in Input) Decision {
				d := Decide(in)
				if d.Action == Kexec || d.Action == Firmware {
					d.State = d.State.MarkBad(in.Running)
				}
				return fix(in, d)
			},
			want: propKept,
		},
		{
			name: "writes on every boot",
			decide: func(in Input) Decision {
				d := Decide(in)
				d.Write = true
				return d
			},
			want: propSteady,
		},
		{
			name: "boots the running slot when nothing is bootable",
			decide: func(in Input) Decision {
				d := Decide(in)
				if d.Action == Rescue {
					d.Action, d.Target = Continue, in.Running
				}
				return d
			},
			want: propRescue,
		},
		{
			// Locally every decision is fine; only the loop shows.
			name: "no marker on a BootNext handover to a committed slot",
			decide: func(in Input) Decision {
				d := Decide(in)
				if d.Action == Firmware && in.State.Get(d.Target).Successful {
					d.State.Counted = ""
				}
				return fix(in, d)
			},
			want: propGood,
		},
		{
			name: "never leaves a crashing slot",
			decide: func(in Input) Decision {
				in.CrashLimit = 0
				return Decide(in)
			},
			want: propLeft,
		},
		{
			name: "leaves a crashing slot one crash late",
			decide: func(in Input) Decision {
				in.CrashLimit++
				return Decide(in)
			},
			limit: 2,
			want:  propLeft,
		},
		{
			name: "leaves a committed slot on its first crash",
			decide: func(in Input) Decision {
				in.CrashLimit = 1
				return Decide(in)
			},
			want: propCrashOK,
		},
		{
			name: "counts each crash record twice",
			decide: func(in Input) Decision {
				in.Crashed = append(in.Crashed, in.Crashed...)
				return Decide(in)
			},
			want: propCrash1,
		},
		{
			name:       "the init removes the crash records after its write",
			decide:     Decide,
			removeLate: true,
			want:       propCrash1,
		},
		{
			name: "clears the crash count on a boot without a crash",
			decide: func(in Input) Decision {
				d := Decide(in)
				if a := d.State.Get(d.Target); len(in.Crashed) == 0 && d.Action == Continue && a.Crashes > 0 {
					a.Crashes = 0
					d.State = d.State.With(d.Target, a)
				}
				return fix(in, d)
			},
			want: propSteady,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.limit == 0 {
				tc.limit = slotstate.DefaultCrashLimit
			}
			c := newChecker(tc.decide, tc.limit)
			c.removeLate = tc.removeLate
			c.run()
			msg := c.violMsg[tc.want]
			if msg == "" {
				t.Fatalf("the checker missed a violation of property %s", propNames[tc.want])
			}
			lines := strings.Split(msg, "\n")
			t.Logf("caught after %d states: %s", len(c.nodes), lines[len(lines)-1])
		})
	}
}
