package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/window"
)

// Node is what the agent needs from the machine it runs on. abctl provides
// the real one; tests provide a simulation.
type Node interface {
	// Name names the node in the fleet; it must not contain "/".
	Name() string
	// Version is the version the node runs now.
	Version() string
	// BootID changes on every boot, kexec included
	// (/proc/sys/kernel/random/boot_id), so that the agent can tell a
	// reboot that happened from one that did not.
	BootID() string
	// Stage downloads d's bundle and installs it into the inactive slot
	// without rebooting.
	Stage(ctx context.Context, d Desired) error
	// PreReboot runs once the node holds a place, before the reboot (e.g.
	// drain it); PostCommit runs after the report that follows the
	// reboot, whether the node committed or rolled back, and when a
	// reboot is called off after PreReboot (e.g. uncordon it). Either may
	// do nothing.
	PreReboot(ctx context.Context) error
	PostCommit(ctx context.Context) error
	// Reboot reboots into the staged slot. On success it does not return
	// on a real machine; if it does return nil, the agent takes it that
	// the machine is going down and Run returns.
	Reboot(ctx context.Context) error
	// Healthy is asked after a reboot that came back on the target
	// version: it runs the node's health check and, if it passes, commits
	// the running slot, and reports whether it did.
	Healthy(ctx context.Context) (bool, error)
}

// Config configures an Agent. Every agent of a fleet must use the same
// Prefix, MaxRebooting and MaxFailures.
type Config struct {
	Prefix       string        // etcd prefix of the fleet, e.g. "/abboot/fleet"
	MaxRebooting int           // places in the semaphore (at least 1)
	MaxFailures  int           // failures that halt a rollout (at least 1)
	Window       window.Window // when the node may reboot; the zero Window never opens, window.Parse("*") always is
	// Canaries is how many nodes start a rollout alone (0: none); the
	// others start once each canary committed and stayed healthy for
	// Soak. See the package documentation.
	Canaries int
	Soak     time.Duration
	// LeaseTTL is how long a place outlives its holder's last renewal. It
	// must cover a reboot. Default 10 minutes; etcd counts it in seconds.
	LeaseTTL time.Duration
	// Poll is how often the Channel is fetched, and the longest the agent
	// backs off after an error. The etcd side needs no polling: the agent
	// waits on watches. Default 30 s.
	Poll    time.Duration
	Clock   func() time.Time // the time the window is checked at; default time.Now
	Channel *Channel         // if set, the desired version comes from it and not from P/desired
	// FleetLock, if set, gives the node its place instead of etcd's
	// semaphore: airlock or a Kubernetes FleetLock server coordinates
	// the reboots (MaxRebooting is the server's then).
	FleetLock *FleetLock
	Log       *event.Logger // default event.Default
	Metrics   *Metrics      // if set, the agent keeps them current
}

// Agent rolls updates onto one node. See the package documentation.
type Agent struct {
	cli  *clientv3.Client
	node Node
	cfg  Config
	p    keys
	rec  Record // as last written to etcd
	// until, set by a step, is what the node waits for besides the
	// desired version: a halt cleared, the canaries' gate.
	until until
	// gate is what lets this node start rec.Target: its canary slot, or
	// the canaries' gate (nothing without canaries); canary says which.
	gate   []clientv3.Cmp
	canary bool

	mu      sync.Mutex
	want    Desired       // P/desired as last seen by the session's watch
	wantErr error         // why that value is not valid
	changed chan struct{} // closed when want changes
}

// Validate reports what is wrong with c, defaults filled (see NewAgent).
func (c Config) Validate() error {
	switch {
	case !keys(c.Prefix).valid():
		return fmt.Errorf("prefix %q: want /a/path without a trailing slash", c.Prefix)
	case c.MaxRebooting < 1 || c.MaxFailures < 1:
		return fmt.Errorf("max rebooting %d, max failures %d: want at least 1 each", c.MaxRebooting, c.MaxFailures)
	case c.Canaries < 0 || c.Soak < 0:
		return fmt.Errorf("canaries %d, soak %v: want neither negative", c.Canaries, c.Soak)
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("lease TTL %v: want at least a second", c.LeaseTTL)
	case c.FleetLock != nil:
		return c.FleetLock.Validate()
	}
	return nil
}

// NewAgent returns an agent for node n that coordinates through cli.
// Defaults fill the zero fields of c that have one.
func NewAgent(cli *clientv3.Client, n Node, c Config) *Agent {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Minute
	}
	if c.Poll == 0 {
		c.Poll = 30 * time.Second
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Log == nil {
		c.Log = event.Default
	}
	return &Agent{cli: cli, node: n, cfg: c, p: keys(c.Prefix), changed: make(chan struct{})}
}

var (
	// errRebooted ends Run: the node is going down.
	errRebooted = errors.New("rebooting")
	// errLeaseLost ends a session: its lease, and any place, are gone.
	errLeaseLost = errors.New("lost the etcd lease")
)

// idle, returned by a step, means: wait for something to change (the
// desired version, the session, a watched key), however long that takes.
const idle time.Duration = -1

// Run runs the agent until ctx ends, or until the node reboots (it returns
// nil then). It survives etcd being down, slow or unreachable: it backs
// off and tries again, and never reboots without holding a place.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.cfg.Validate(); err != nil {
		return err
	}
	if !validName(a.node.Name()) {
		return fmt.Errorf("node name %q: want a non-empty name without / or line breaks", a.node.Name())
	}
	b := backoff{max: a.cfg.Poll}
	for {
		err := a.session(ctx, &b)
		if errors.Is(err, errRebooted) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.logError("fleet-error", err)
		if !sleep(ctx, b.wait()) {
			return ctx.Err()
		}
	}
}

// session runs the agent on one etcd session (one lease) until the lease
// is lost, the node reboots or ctx ends.
func (a *Agent) session(ctx context.Context, b *backoff) error {
	// One read for everything the session starts from: the node's record,
	// its place (to adopt the lease of a place it holds already: one taken
	// before a reboot, or by an agent that was stopped) and the desired
	// version, which the watch below follows from this revision on.
	key := a.p.place(a.node.Name())
	resp, err := a.cli.Txn(ctx).Then(
		clientv3.OpGet(a.p.node(a.node.Name())), clientv3.OpGet(key), clientv3.OpGet(a.p.desired()),
	).Commit()
	if err != nil {
		return fmt.Errorf("reading the node's record and place: %w", err)
	}
	if err := a.load(resp.Responses[0].GetResponseRange().Kvs); err != nil {
		return err
	}
	a.see(resp.Responses[2].GetResponseRange().Kvs)
	opts := []concurrency.SessionOption{concurrency.WithTTL(int(a.cfg.LeaseTTL.Seconds())), concurrency.WithContext(ctx)}
	var rev int64
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) == 1 {
		opts = append(opts, concurrency.WithLease(clientv3.LeaseID(kvs[0].Lease)))
		rev = kvs[0].CreateRevision
	}
	sess, err := concurrency.NewSession(a.cli, opts...)
	if err != nil {
		return fmt.Errorf("opening an etcd session: %w", err)
	}
	// Stop renewing, never revoke: a place this node holds must outlive
	// the process (see the package documentation).
	defer sess.Orphan()
	var pl place = &semaphore{cli: a.cli, prefix: a.p.places(), key: key, lease: sess.Lease(), n: a.cfg.MaxRebooting, rev: rev}
	if a.cfg.FleetLock != nil {
		pl = &fleetLockPlace{f: a.cfg.FleetLock, cli: a.cli, max: a.cfg.Poll, logError: a.logError}
	}

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	watchEnded := make(chan error, 1)
	if a.cfg.Channel == nil {
		go func() {
			for wr := range a.cli.Watch(wctx, a.p.desired(), clientv3.WithRev(resp.Header.Revision+1)) {
				if err := wr.Err(); err != nil {
					watchEnded <- fmt.Errorf("watching %s: %w", a.p.desired(), err)
					return
				}
				for _, ev := range wr.Events {
					a.see([]*mvccpb.KeyValue{ev.Kv})
				}
			}
			watchEnded <- fmt.Errorf("watching %s: the watch ended", a.p.desired())
		}()
	}
	var until clientv3.WatchChan // watches a.until.prefix
	watching, stopUntil := "", func() {}
	defer func() { stopUntil() }()
	for {
		changed := a.change()
		wait, err := a.step(ctx, sess, pl)
		switch {
		case errors.Is(err, errRebooted), errors.Is(err, errLeaseLost), ctx.Err() != nil:
			return err
		case err != nil:
			a.logError("fleet-error", err)
			wait = b.wait()
		default:
			b.reset()
		}
		if a.until.prefix != watching {
			stopUntil()
			until, watching = nil, a.until.prefix
			if watching != "" {
				until, stopUntil = a.watch(wctx, a.until.prefix, a.until.rev+1)
			}
		}
		if wait == idle && a.cfg.Channel != nil {
			wait = a.cfg.Poll
		}
		if wait == 0 {
			continue
		}
		var timer *time.Timer
		var fired <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			fired = timer.C
		}
		for woke := false; !woke; {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-sess.Done():
				return errLeaseLost
			case err := <-watchEnded:
				return err
			case <-changed:
				woke = true
			case wr, ok := <-until:
				woke = !ok || wr.Err() != nil || slices.ContainsFunc(wr.Events, a.until.wake)
				if woke {
					stopUntil()
					until, watching = nil, ""
				}
			case <-fired:
				woke = true
			}
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// untilWindow returns how long to wait for the window that opens at start,
// or at most Poll: the clock can jump (suspend, NTP, a test's clock).
func (a *Agent) untilWindow(start, now time.Time) time.Duration {
	if start.IsZero() {
		return a.cfg.Poll
	}
	return max(min(start.Sub(now), a.cfg.Poll), 0)
}

// until is something a node waits for: an event under prefix after
// revision rev for which wake is true.
type until struct {
	prefix string
	rev    int64
	wake   func(*clientv3.Event) bool
}

// watch watches everything under prefix from revision rev on, until the
// returned function is called or ctx ends.
func (a *Agent) watch(ctx context.Context, prefix string, rev int64) (clientv3.WatchChan, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	return a.cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev)), cancel
}

// step takes the node one step further in a rollout and returns how long
// to wait, at most, before the next step: 0 for at once, idle for until
// something changes.
func (a *Agent) step(ctx context.Context, sess *concurrency.Session, pl place) (time.Duration, error) {
	if a.rec.State == StateRebooting {
		return a.afterReboot(ctx, pl)
	}
	a.until = until{}
	changed := a.change()
	d, err := a.desired(ctx)
	if err != nil {
		return 0, err
	}
	a.cfg.Metrics.versions(a.node.Version(), d.Version)
	if d.Version == "" {
		return idle, a.stay(ctx, pl, a.settled(), "", "no desired version")
	}
	newer, err := newerThan(d.Version, a.node.Version())
	if err != nil {
		return 0, err
	}
	if !newer {
		if a.rec.State == StateCommitted && a.rec.Canary == canarySoaking && a.rec.Target == d.Version {
			return a.soak(ctx, d.Version)
		}
		return idle, a.stay(ctx, pl, a.settled(), "", "")
	}
	now := a.cfg.Clock()
	start, end := a.cfg.Window.Next(now)
	if !a.cfg.Window.Contains(now) && a.rec.State == StateWaitingWindow && a.rec.Target == d.Version {
		return a.untilWindow(start, now), nil // nothing changed: no need to ask etcd
	}
	// The staging record goes in the transaction that checks the rollout.
	var ops []clientv3.Op
	staging := a.record(StateStaging, d.Version, "")
	if a.rec.Target != d.Version || !slices.Contains([]State{StateStaged, StateWaitingWindow, StateWaitingPlace, StateHalted}, a.rec.State) {
		ops = append(ops, clientv3.OpPut(a.p.node(a.node.Name()), jsonOf(staging)))
	}
	ro, err := a.rollout(ctx, d.Version, ops...)
	if err != nil {
		return 0, err
	}
	if ro.failed != "" {
		// Only a node that failed checks the budget: halting is its job,
		// which a crash may have kept it from.
		_, err := a.budget(ctx, ro)
		return idle, errors.Join(err, a.stay(ctx, pl, StateRolledBack, d.Version, ro.failed))
	}
	if ro.halted != "" {
		halted := a.p.halted(d.Version)
		a.until = until{prefix: halted, rev: ro.rev, wake: func(ev *clientv3.Event) bool {
			return ev.Type == mvccpb.DELETE && string(ev.Kv.Key) == halted
		}}
		return idle, a.stay(ctx, pl, StateHalted, d.Version, ro.halted)
	}
	if ops != nil {
		a.wrote(staging)
		if err := a.node.Stage(ctx, d); err != nil {
			return 0, errors.Join(fmt.Errorf("staging %s: %w", d.Version, err), a.set(ctx, StateStaging, d.Version, "staging failed: "+err.Error()))
		}
	}

	if !a.cfg.Window.Contains(now) {
		return a.untilWindow(start, now), a.stay(ctx, pl, StateWaitingWindow, d.Version, "window opens "+start.Format(time.RFC3339))
	}
	if wait, ok, err := a.canaries(ctx, sess, pl, d.Version); err != nil || !ok {
		return wait, err
	}
	rec := a.record(StateWaitingPlace, d.Version, "")
	if err := pl.queue(ctx, clientv3.OpPut(a.p.node(a.node.Name()), jsonOf(rec))); err != nil {
		return 0, err
	}
	a.wrote(rec)

	// Wait for a place as long as the window is open, the desired version
	// stays and the session lives.
	actx, cancel := context.WithCancel(ctx)
	if !end.IsZero() {
		var closes context.CancelFunc
		actx, closes = context.WithTimeout(actx, end.Sub(now)) // by the Clock's time
		defer closes()
	}
	go func() {
		select {
		case <-changed:
		case <-sess.Done():
		case <-actx.Done():
		}
		cancel()
	}()
	// Drain only while the desired version is the same (a channel file is
	// fetched again), the place is still this node's, the rollout has not
	// halted and the window is open: the draining record goes in the
	// transaction that takes the place.
	begin := func() ([]clientv3.Op, bool, error) {
		again, err := a.desired(ctx)
		if err != nil || again != d || !a.cfg.Window.Contains(a.cfg.Clock()) || actx.Err() != nil {
			return nil, false, err
		}
		rec = a.record(StateDraining, d.Version, "")
		return []clientv3.Op{clientv3.OpPut(a.p.node(a.node.Name()), jsonOf(rec))}, true, nil
	}
	started, err := pl.acquire(actx, begin, a.mayStart(sess, pl, d.Version)...)
	ended := actx.Err() != nil
	cancel()
	switch {
	case err == nil && !started:
		return 0, pl.release(ctx) // the next step finds out why
	case err == nil:
	case ctx.Err() != nil:
		return 0, ctx.Err()
	case ended, errors.Is(err, errNotQueued):
		return 0, nil // the window closed, the desired version changed or the lease is gone: look again
	default:
		return 0, err
	}
	a.wrote(rec)
	if err := a.node.PreReboot(ctx); err != nil {
		return a.callOff(ctx, pl, d.Version, "pre-reboot hook: "+err.Error())
	}
	return a.reboot(ctx, sess, pl, d.Version)
}

// reboot reboots the node, which holds a place, into version v, but only
// if its place is still there under its live lease and the rollout has
// not halted.
func (a *Agent) reboot(ctx context.Context, sess *concurrency.Session, pl place, v string) (time.Duration, error) {
	rec := a.record(StateRebooting, v, "")
	rec.Lease, rec.BootID = int64(sess.Lease()), a.node.BootID()
	if a.canary {
		rec.Canary = canarySoaking
	}
	resp, err := a.cli.Txn(ctx).
		If(a.mayStart(sess, pl, v)...).
		Then(clientv3.OpPut(a.p.node(a.node.Name()), jsonOf(rec)),
			clientv3.OpPut(a.p.started(v, a.node.Name()), "")).
		Commit()
	if err != nil {
		return a.callOff(ctx, pl, v, "recording the reboot: "+err.Error())
	}
	if !resp.Succeeded {
		return a.callOff(ctx, pl, v, "the place was lost, the rollout halted or the canaries' gate closed before the reboot")
	}
	a.wrote(rec)
	select {
	case <-sess.Done():
		// The record says rebooting with this boot's ID: the next agent
		// sees that the reboot did not happen.
		return 0, errLeaseLost
	default:
	}
	if err := a.node.Reboot(ctx); err != nil {
		return a.callOff(ctx, pl, v, "reboot: "+err.Error())
	}
	return 0, errRebooted
}

// callOff undoes what taking the place started when the node does not
// reboot after all: PostCommit undoes PreReboot, the node goes back to
// staged and gives its place back.
func (a *Agent) callOff(ctx context.Context, pl place, v, why string) (time.Duration, error) {
	a.log("fleet-call-off", "target", v, "reason", why)
	err := a.node.PostCommit(ctx)
	if err != nil {
		err = fmt.Errorf("post-commit hook: %w", err)
	}
	return a.cfg.Poll, errors.Join(err, a.set(ctx, StateStaged, v, why), pl.release(ctx))
}

// afterReboot reports how the reboot recorded in a.rec went and gives the
// place back.
func (a *Agent) afterReboot(ctx context.Context, pl place) (time.Duration, error) {
	v := a.rec.Target
	if a.rec.BootID == a.node.BootID() {
		return a.callOff(ctx, pl, v, "the reboot did not happen")
	}
	if !pl.adopted() {
		a.log("fleet-place-lost", "target", v, "lease_ttl", a.cfg.LeaseTTL)
	}
	var why string
	if c, err := bundle.CompareVersions(a.node.Version(), v); err != nil || c != 0 {
		why = fmt.Sprintf("came back on %s, not %s", a.node.Version(), v)
	} else if ok, err := a.node.Healthy(ctx); err != nil {
		return 0, fmt.Errorf("health check: %w", err)
	} else if !ok {
		why = "unhealthy on " + v
	}
	if why == "" {
		if err := a.set(ctx, StateCommitted, v, ""); err != nil {
			return 0, err
		}
	} else if err := a.fail(ctx, v, why); err != nil {
		return 0, err
	}
	if err := a.node.PostCommit(ctx); err != nil {
		a.logError("fleet-hook", err, "hook", "post-commit")
	}
	return 0, pl.release(ctx)
}

// The values of Record.Canary.
const (
	canarySoaking = "soaking" // started as a canary; not yet soaked
	canarySoaked  = "soaked"
)

// mayStart is what must hold for the node to drain and to reboot into v:
// its place is still there under its live lease, the rollout has not
// halted, and its canary slot or the canaries' gate lets it.
func (a *Agent) mayStart(sess *concurrency.Session, pl place, v string) []clientv3.Cmp {
	return append(append(pl.holds(), clientv3.Compare(clientv3.CreateRevision(a.p.halted(v)), "=", 0)), a.gate...)
}

// canaries finds out whether the node may queue for v: always without
// canaries; with them, once the gate is open, or as a canary if it holds
// or can claim one of the Canaries slots. Otherwise the node waits for the
// gate to open or a slot to free up. One bounded read (the gate and at
// most Canaries slots), and a claim when a slot is free.
func (a *Agent) canaries(ctx context.Context, sess *concurrency.Session, pl place, v string) (time.Duration, bool, error) {
	a.gate, a.canary = nil, false
	if a.cfg.Canaries == 0 {
		return 0, true, nil
	}
	gate := a.p.gate(v)
	resp, err := a.cli.Txn(ctx).Then(
		clientv3.OpGet(gate, clientv3.WithCountOnly()),
		clientv3.OpGet(a.p.canaries(v)+"slot/", clientv3.WithPrefix(), clientv3.WithLimit(int64(a.cfg.Canaries))),
	).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("reading the canaries of %s: %w", v, err)
	}
	if resp.Responses[0].GetResponseRange().Count > 0 {
		a.gate = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(gate), ">", 0)}
		return 0, true, nil
	}
	taken := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		taken[string(kv.Key)] = true
		if string(kv.Value) == a.node.Name() && clientv3.LeaseID(kv.Lease) == sess.Lease() {
			a.gate, a.canary = []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(string(kv.Key)), "=", sess.Lease())}, true
			return 0, true, nil
		}
	}
	for i := range a.cfg.Canaries {
		slot := a.p.canarySlot(v, i)
		if taken[slot] {
			continue
		}
		claim, err := a.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(slot), "=", 0)).
			Then(clientv3.OpPut(slot, a.node.Name(), clientv3.WithLease(sess.Lease()))).
			Commit()
		if err != nil {
			return 0, false, fmt.Errorf("claiming canary slot %d of %s: %w", i, v, err)
		}
		if claim.Succeeded {
			a.log("fleet-canary", "target", v, "slot", i)
			a.gate, a.canary = []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(slot), "=", sess.Lease())}, true
			return 0, true, nil
		}
		return 0, false, nil // somebody was faster: look again
	}
	// Wake when the gate opens, a slot frees up (a canary died) or the
	// rollout halts, not for every claim, start, failure and soak.
	a.until = until{prefix: a.p.rollout(v), rev: resp.Header.Revision, wake: func(ev *clientv3.Event) bool {
		k := string(ev.Kv.Key)
		return k == gate || k == a.p.halted(v) || ev.Type == mvccpb.DELETE && strings.HasPrefix(k, a.p.canaries(v)+"slot/")
	}}
	return idle, false, a.stay(ctx, pl, StateWaitingCanary, v, fmt.Sprintf("%d canaries first", a.cfg.Canaries))
}

// soak waits until the canary committed Soak ago, asks Node.Healthy again,
// and records that it soaked, opening the gate if it is the last of the
// canaries to; or records the failure, which halts the rollout.
func (a *Agent) soak(ctx context.Context, v string) (time.Duration, error) {
	if left := a.rec.Updated.Add(a.cfg.Soak).Sub(a.cfg.Clock()); left > 0 {
		return left, nil
	}
	if ok, err := a.node.Healthy(ctx); err != nil {
		return 0, fmt.Errorf("health check: %w", err)
	} else if !ok {
		return idle, a.fail(ctx, v, fmt.Sprintf("unhealthy on %s after a soak of %v", v, a.cfg.Soak))
	}
	rec := a.record(StateCommitted, v, "")
	rec.Canary = canarySoaked
	resp, err := a.cli.Txn(ctx).Then(
		clientv3.OpPut(a.p.soaked(v, a.node.Name()), ""),
		clientv3.OpPut(a.p.node(a.node.Name()), jsonOf(rec)),
		clientv3.OpGet(a.p.canaries(v)+"soaked/", clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return 0, fmt.Errorf("recording the soak: %w", err)
	}
	a.wrote(rec)
	if n := resp.Responses[2].GetResponseRange().Count; n >= int64(a.cfg.Canaries) {
		if _, err := a.cli.Put(ctx, a.p.gate(v), fmt.Sprintf("%d canaries soaked", n)); err != nil {
			return 0, fmt.Errorf("opening the canaries' gate: %w", err)
		}
		a.log("fleet-canaries-soaked", "target", v, "canaries", n)
	}
	return idle, nil
}

// fail records that the node rolled back from v and halts the rollout if
// that spends the budget.
func (a *Agent) fail(ctx context.Context, v, why string) error {
	rec := a.record(StateRolledBack, v, why)
	if _, err := a.cli.Txn(ctx).Then(
		clientv3.OpPut(a.p.node(a.node.Name()), jsonOf(rec)),
		clientv3.OpPut(a.p.failure(v, a.node.Name()), why),
	).Commit(); err != nil {
		return fmt.Errorf("recording the rollback: %w", err)
	}
	a.wrote(rec)
	ro, err := a.rollout(ctx, v)
	if err != nil {
		return err
	}
	_, err = a.budget(ctx, ro)
	return err
}

// budget returns why ro is halted, halting it if its failures reached
// MaxFailures, or "" if it may go on.
func (a *Agent) budget(ctx context.Context, ro rollout) (string, error) {
	canary := ro.failed != "" && a.rec.Canary != "" && a.rec.Target == ro.version
	if ro.halted != "" || ro.failures < int64(a.cfg.MaxFailures) && !canary {
		return ro.halted, nil
	}
	// The failures are at most MaxFailures+MaxRebooting-1 (see the package
	// documentation); the limit keeps the reason bounded all the same.
	resp, err := a.cli.Get(ctx, a.p.rollout(ro.version)+"failures/", clientv3.WithPrefix(), clientv3.WithLimit(int64(a.cfg.MaxFailures+a.cfg.MaxRebooting)))
	if err != nil {
		return "", fmt.Errorf("reading the failures of %s: %w", ro.version, err)
	}
	var who []string
	for _, kv := range resp.Kvs {
		who = append(who, strings.TrimPrefix(string(kv.Key), a.p.rollout(ro.version)+"failures/")+": "+string(kv.Value))
	}
	reason := fmt.Sprintf("%d nodes failed %s, the budget is %d (%s)", ro.failures, ro.version, a.cfg.MaxFailures, strings.Join(who, "; "))
	if canary {
		reason = fmt.Sprintf("canary %s failed %s: %s", a.node.Name(), ro.version, ro.failed)
	}
	halted := a.p.halted(ro.version)
	tresp, err := a.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(halted), "=", 0)).
		Then(clientv3.OpPut(halted, reason)).
		Else(clientv3.OpGet(halted)).
		Commit()
	if err != nil {
		return "", fmt.Errorf("halting the rollout of %s: %w", ro.version, err)
	}
	if !tresp.Succeeded {
		if kvs := tresp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			return string(kvs[0].Value), nil
		}
		return reason, nil
	}
	a.log("fleet-halt", "version", ro.version, "failures", ro.failures, "reason", reason)
	return reason, nil
}

// stay records that the node waits in state s and gives back its place in
// the queue, if it has one, so that it does not block others.
func (a *Agent) stay(ctx context.Context, pl place, s State, target, why string) error {
	return errors.Join(pl.release(ctx), a.set(ctx, s, target, why))
}

// settled is the state of a node that has nothing to do: committed if it
// got there by a rollout, else idle.
func (a *Agent) settled() State {
	if a.rec.State == StateCommitted {
		return StateCommitted
	}
	return StateIdle
}

// desired returns the version the fleet should run, "" if none is set:
// from the channel file, or P/desired as the session's watch last saw it.
func (a *Agent) desired(ctx context.Context) (Desired, error) {
	if a.cfg.Channel != nil {
		return a.cfg.Channel.Fetch(ctx)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.want, a.wantErr
}

// see notes P/desired as read or watched: kvs holds the key, or nothing
// if it is not set (or was deleted).
func (a *Agent) see(kvs []*mvccpb.KeyValue) {
	var d Desired
	var err error
	if len(kvs) == 1 && len(kvs[0].Value) > 0 {
		if err = json.Unmarshal(kvs[0].Value, &d); err != nil {
			err = fmt.Errorf("%s: %w", a.p.desired(), err)
		} else {
			err = d.validate()
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if d != a.want || (err == nil) != (a.wantErr == nil) {
		close(a.changed)
		a.changed = make(chan struct{})
	}
	a.want, a.wantErr = d, err
}

// change returns a channel closed when the desired version changes from
// what desired returns now.
func (a *Agent) change() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.changed
}

// rollout is what a node needs to know of the rollout of a version.
type rollout struct {
	version  string
	failed   string // why this node failed it, "" if it did not
	halted   string // why it halted, "" if it did not
	failures int64  // how many nodes failed it
	rev      int64  // the revision it was read at
}

// rollout reads what this node needs to know of the rollout of version v,
// in one request whose size does not grow with the fleet. If this node
// did not fail v and v did not halt, ops run in the same transaction.
func (a *Agent) rollout(ctx context.Context, v string, ops ...clientv3.Op) (rollout, error) {
	failure, halted := a.p.failure(v, a.node.Name()), a.p.halted(v)
	resp, err := a.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(failure), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(halted), "=", 0)).
		Then(ops...).
		Else(clientv3.OpGet(failure), clientv3.OpGet(halted),
			clientv3.OpGet(a.p.rollout(v)+"failures/", clientv3.WithPrefix(), clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return rollout{}, fmt.Errorf("reading the rollout of %s: %w", v, err)
	}
	ro := rollout{version: v, rev: resp.Header.Revision}
	if resp.Succeeded {
		return ro, nil
	}
	ro.failures = resp.Responses[2].GetResponseRange().Count
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		ro.failed = string(kvs[0].Value)
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) == 1 {
		ro.halted = string(kvs[0].Value)
	}
	return ro, nil
}

// load takes the node's record from kvs (its key, read), or starts one.
func (a *Agent) load(kvs []*mvccpb.KeyValue) error {
	if len(kvs) == 0 {
		a.rec = Record{Name: a.node.Name(), State: StateIdle}
		return nil
	}
	var r Record
	if err := json.Unmarshal(kvs[0].Value, &r); err != nil {
		return fmt.Errorf("%s: %w", kvs[0].Key, err)
	}
	a.rec = r
	return nil
}

// record returns a.rec moved to state s.
func (a *Agent) record(s State, target, why string) Record {
	r := Record{Name: a.node.Name(), Version: a.node.Version(), State: s, Target: target, Reason: why, Updated: a.cfg.Clock().UTC()}
	if target == a.rec.Target {
		r.Canary = a.rec.Canary
	}
	return r
}

// set records that the node is in state s, writing only on a change.
func (a *Agent) set(ctx context.Context, s State, target, why string) error {
	rec := a.record(s, target, why)
	if old := a.rec; old.Updated == (time.Time{}) || rec.Version != old.Version || rec.State != old.State || rec.Target != old.Target || rec.Reason != old.Reason || old.Lease != 0 {
		if _, err := a.cli.Put(ctx, a.p.node(a.node.Name()), jsonOf(rec)); err != nil {
			return fmt.Errorf("recording state %s: %w", s, err)
		}
		a.wrote(rec)
	}
	return nil
}

// wrote notes that rec is in etcd now.
func (a *Agent) wrote(rec Record) {
	a.cfg.Metrics.wrote(a.rec, rec)
	if rec.State != a.rec.State || rec.Reason != a.rec.Reason {
		a.log("fleet-state", "state", rec.State, "version", rec.Version, "target", rec.Target, "reason", rec.Reason)
	}
	a.rec = rec
}

func (a *Agent) log(name string, kv ...any) {
	a.cfg.Log.Log(name, append([]any{"node", a.node.Name()}, kv...)...)
}

// logError writes a failure's event for this node (event.Error).
func (a *Agent) logError(name string, err error, kv ...any) {
	a.cfg.Log.Error(name, err, append([]any{"node", a.node.Name()}, kv...)...)
}

// sleep waits for d or until ctx ends, and reports whether it was d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoff spaces the retries after errors: doubling from a second up to
// max, each wait drawn at random from its upper half so that agents that
// failed together (etcd slow or down) do not come back together.
type backoff struct {
	max  time.Duration
	next time.Duration
}

func (b *backoff) wait() time.Duration {
	b.next = min(max(2*b.next, time.Second), b.max)
	return b.next/2 + rand.N(b.next/2+1)
}

func (b *backoff) reset() { b.next = 0 }
