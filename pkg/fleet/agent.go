package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

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
	// LeaseTTL is how long a place outlives its holder's last renewal. It
	// must cover a reboot. Default 10 minutes; etcd counts it in seconds.
	LeaseTTL time.Duration
	Poll     time.Duration    // how often to look again without a watch event; default 30 s
	Clock    func() time.Time // the time the window is checked at; default time.Now
	Channel  *Channel         // if set, the desired version comes from it and not from P/desired
	Log      *event.Logger    // default event.Default
}

// Agent rolls updates onto one node. See the package documentation.
type Agent struct {
	cli  *clientv3.Client
	node Node
	cfg  Config
	p    keys
	rec  Record // as last written to etcd
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
	return &Agent{cli: cli, node: n, cfg: c, p: keys(c.Prefix)}
}

var (
	// errRebooted ends Run: the node is going down.
	errRebooted = errors.New("rebooting")
	// errLeaseLost ends a session: its lease, and any place, are gone.
	errLeaseLost = errors.New("lost the etcd lease")
)

// Run runs the agent until ctx ends, or until the node reboots (it returns
// nil then). It survives etcd being down or unreachable: it waits and
// tries again, and never reboots without holding a place.
func (a *Agent) Run(ctx context.Context) error {
	switch {
	case !a.p.valid():
		return fmt.Errorf("prefix %q: want /a/path without a trailing slash", a.cfg.Prefix)
	case !validName(a.node.Name()):
		return fmt.Errorf("node name %q: want a non-empty name without / or line breaks", a.node.Name())
	case a.cfg.MaxRebooting < 1 || a.cfg.MaxFailures < 1:
		return fmt.Errorf("max rebooting %d, max failures %d: want at least 1 each", a.cfg.MaxRebooting, a.cfg.MaxFailures)
	case a.cfg.LeaseTTL < time.Second:
		return fmt.Errorf("lease TTL %v: want at least a second", a.cfg.LeaseTTL)
	}
	for {
		err := a.session(ctx)
		if errors.Is(err, errRebooted) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.log("fleet-error", "err", err)
		if !sleep(ctx, a.cfg.Poll) {
			return ctx.Err()
		}
	}
}

// session runs the agent on one etcd session (one lease) until the lease
// is lost, the node reboots or ctx ends.
func (a *Agent) session(ctx context.Context) error {
	if err := a.load(ctx); err != nil {
		return err
	}
	// Adopt the lease of a place this node holds already: one taken
	// before a reboot, or by an agent that was stopped.
	place := a.p.place(a.node.Name())
	resp, err := a.cli.Get(ctx, place)
	if err != nil {
		return fmt.Errorf("reading %s: %w", place, err)
	}
	opts := []concurrency.SessionOption{concurrency.WithTTL(int(a.cfg.LeaseTTL.Seconds())), concurrency.WithContext(ctx)}
	if len(resp.Kvs) == 1 {
		opts = append(opts, concurrency.WithLease(clientv3.LeaseID(resp.Kvs[0].Lease)))
	}
	sess, err := concurrency.NewSession(a.cli, opts...)
	if err != nil {
		return fmt.Errorf("opening an etcd session: %w", err)
	}
	// Stop renewing, never revoke: a place this node holds must outlive
	// the process (see the package documentation).
	defer sess.Orphan()
	sem := &semaphore{cli: a.cli, prefix: a.p.places(), key: place, lease: sess.Lease(), n: a.cfg.MaxRebooting}

	wake := make(chan struct{}, 1)
	if a.cfg.Channel == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		go func() {
			for range a.cli.Watch(wctx, a.p.desired()) {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		}()
	}
	for {
		wait, err := a.step(ctx, sess, sem)
		switch {
		case errors.Is(err, errRebooted), errors.Is(err, errLeaseLost), ctx.Err() != nil:
			return err
		case err != nil:
			a.log("fleet-error", "err", err)
			wait = a.cfg.Poll
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sess.Done():
			return errLeaseLost
		case <-wake:
		case <-time.After(wait):
		}
	}
}

// step takes the node one step further in a rollout and returns how long
// to wait, at most, before the next step.
func (a *Agent) step(ctx context.Context, sess *concurrency.Session, sem *semaphore) (time.Duration, error) {
	if a.rec.State == StateRebooting {
		return a.afterReboot(ctx, sem)
	}
	d, err := a.desired(ctx)
	if err != nil {
		return 0, err
	}
	if d.Version == "" {
		return a.cfg.Poll, a.set(ctx, a.settled(), "", "no desired version")
	}
	newer, err := newerThan(d.Version, a.node.Version())
	if err != nil {
		return 0, err
	}
	if !newer {
		return a.cfg.Poll, a.set(ctx, a.settled(), "", "")
	}
	ro, err := a.rollout(ctx, d.Version)
	if err != nil {
		return 0, err
	}
	if why, ok := ro.Failures[a.node.Name()]; ok {
		return a.cfg.Poll, a.set(ctx, StateRolledBack, d.Version, why)
	}
	if stop, err := a.budget(ctx, ro); err != nil || stop != "" {
		if err == nil {
			err = a.stay(ctx, sem, StateHalted, d.Version, stop)
		}
		return a.cfg.Poll, err
	}
	switch a.rec.State {
	case StateStaged, StateWaitingWindow, StateWaitingPlace, StateHalted:
		if a.rec.Target == d.Version {
			break
		}
		fallthrough
	default:
		if err := a.set(ctx, StateStaging, d.Version, ""); err != nil {
			return 0, err
		}
		if err := a.node.Stage(ctx, d); err != nil {
			return a.cfg.Poll, a.set(ctx, StateStaging, d.Version, "staging failed: "+err.Error())
		}
		if err := a.set(ctx, StateStaged, d.Version, ""); err != nil {
			return 0, err
		}
	}

	now := a.cfg.Clock()
	start, end := a.cfg.Window.Next(now)
	if !a.cfg.Window.Contains(now) {
		wait := a.cfg.Poll
		if !start.IsZero() {
			wait = min(wait, start.Sub(now))
		}
		return wait, a.stay(ctx, sem, StateWaitingWindow, d.Version, "window opens "+start.Format(time.RFC3339))
	}
	if err := a.set(ctx, StateWaitingPlace, d.Version, ""); err != nil {
		return 0, err
	}
	wait := a.cfg.Poll
	if !end.IsZero() {
		wait = min(wait, end.Sub(now))
	}
	actx, cancel := context.WithTimeout(ctx, wait)
	err = sem.acquire(actx)
	timedOut := actx.Err() != nil && ctx.Err() == nil
	cancel()
	if timedOut {
		return 0, nil // still queued; look at everything again
	}
	if err != nil {
		return 0, err
	}

	// Holding a place. What was true when the node queued may not be now.
	if again, err := a.desired(ctx); err != nil || again != d {
		return 0, errors.Join(err, sem.release(ctx))
	}
	if ro, err = a.rollout(ctx, d.Version); err != nil {
		return 0, errors.Join(err, sem.release(ctx))
	}
	if stop, err := a.budget(ctx, ro); err != nil || stop != "" || !a.cfg.Window.Contains(a.cfg.Clock()) {
		return 0, errors.Join(err, sem.release(ctx))
	}
	if err := a.set(ctx, StateDraining, d.Version, ""); err != nil {
		return 0, errors.Join(err, sem.release(ctx))
	}
	if err := a.node.PreReboot(ctx); err != nil {
		return a.callOff(ctx, sem, d.Version, "pre-reboot hook: "+err.Error())
	}
	return a.reboot(ctx, sess, sem, d.Version)
}

// reboot reboots the node, which holds a place, into version v, but only
// if its place is still there under its live lease and the rollout has
// not halted.
func (a *Agent) reboot(ctx context.Context, sess *concurrency.Session, sem *semaphore, v string) (time.Duration, error) {
	rec := a.record(StateRebooting, v, "")
	rec.Lease, rec.BootID = int64(sess.Lease()), a.node.BootID()
	resp, err := a.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(sem.key), "=", sess.Lease()),
			clientv3.Compare(clientv3.CreateRevision(a.p.halted(v)), "=", 0)).
		Then(clientv3.OpPut(a.p.node(a.node.Name()), jsonOf(rec)),
			clientv3.OpPut(a.p.started(v, a.node.Name()), "")).
		Commit()
	if err != nil {
		return a.callOff(ctx, sem, v, "recording the reboot: "+err.Error())
	}
	if !resp.Succeeded {
		return a.callOff(ctx, sem, v, "the place was lost or the rollout halted before the reboot")
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
		return a.callOff(ctx, sem, v, "reboot: "+err.Error())
	}
	return 0, errRebooted
}

// callOff undoes what taking the place started when the node does not
// reboot after all: PostCommit undoes PreReboot, the node goes back to
// staged and gives its place back.
func (a *Agent) callOff(ctx context.Context, sem *semaphore, v, why string) (time.Duration, error) {
	a.log("fleet-call-off", "target", v, "reason", why)
	err := a.node.PostCommit(ctx)
	if err != nil {
		err = fmt.Errorf("post-commit hook: %w", err)
	}
	return a.cfg.Poll, errors.Join(err, a.set(ctx, StateStaged, v, why), sem.release(ctx))
}

// afterReboot reports how the reboot recorded in a.rec went and gives the
// place back.
func (a *Agent) afterReboot(ctx context.Context, sem *semaphore) (time.Duration, error) {
	v := a.rec.Target
	if a.rec.BootID == a.node.BootID() {
		return a.callOff(ctx, sem, v, "the reboot did not happen")
	}
	if held, err := sem.holds(ctx); err != nil {
		return 0, err
	} else if !held {
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
		a.log("fleet-hook", "hook", "post-commit", "err", err)
	}
	return 0, sem.release(ctx)
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
func (a *Agent) budget(ctx context.Context, ro Rollout) (string, error) {
	if ro.Halted != "" || len(ro.Failures) < a.cfg.MaxFailures {
		return ro.Halted, nil
	}
	var who []string
	for _, n := range sortedKeys(ro.Failures) {
		who = append(who, n+": "+ro.Failures[n])
	}
	reason := fmt.Sprintf("%d nodes failed %s, the budget is %d (%s)", len(ro.Failures), ro.Version, a.cfg.MaxFailures, strings.Join(who, "; "))
	halted := a.p.halted(ro.Version)
	resp, err := a.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(halted), "=", 0)).
		Then(clientv3.OpPut(halted, reason)).
		Else(clientv3.OpGet(halted)).
		Commit()
	if err != nil {
		return "", fmt.Errorf("halting the rollout of %s: %w", ro.Version, err)
	}
	if !resp.Succeeded {
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			return string(kvs[0].Value), nil
		}
		return reason, nil
	}
	a.log("fleet-halt", "version", ro.Version, "failures", len(ro.Failures), "reason", reason)
	return reason, nil
}

// stay records that the node waits in state s and gives back its place in
// the queue, if it has one, so that it does not block others.
func (a *Agent) stay(ctx context.Context, sem *semaphore, s State, target, why string) error {
	return errors.Join(sem.release(ctx), a.set(ctx, s, target, why))
}

// settled is the state of a node that has nothing to do: committed if it
// got there by a rollout, else idle.
func (a *Agent) settled() State {
	if a.rec.State == StateCommitted {
		return StateCommitted
	}
	return StateIdle
}

// desired returns the version the fleet should run, "" if none is set.
func (a *Agent) desired(ctx context.Context) (Desired, error) {
	if a.cfg.Channel != nil {
		return a.cfg.Channel.Fetch(ctx)
	}
	resp, err := a.cli.Get(ctx, a.p.desired())
	if err != nil {
		return Desired{}, fmt.Errorf("reading the desired version: %w", err)
	}
	var d Desired
	if len(resp.Kvs) == 0 {
		return d, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &d); err != nil {
		return Desired{}, fmt.Errorf("%s: %w", a.p.desired(), err)
	}
	return d, d.validate()
}

// rollout reads the rollout of version v.
func (a *Agent) rollout(ctx context.Context, v string) (Rollout, error) {
	resp, err := a.cli.Get(ctx, a.p.rollout(v), clientv3.WithPrefix())
	if err != nil {
		return Rollout{}, fmt.Errorf("reading the rollout of %s: %w", v, err)
	}
	ro := Rollout{Version: v, Failures: map[string]string{}}
	for _, kv := range resp.Kvs {
		ro.add(strings.TrimPrefix(string(kv.Key), a.p.rollout(v)), string(kv.Value))
	}
	return ro, nil
}

// load reads the node's record, or starts one.
func (a *Agent) load(ctx context.Context) error {
	key := a.p.node(a.node.Name())
	resp, err := a.cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("reading %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		a.rec = Record{Name: a.node.Name(), State: StateIdle}
		return nil
	}
	var r Record
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	a.rec = r
	return nil
}

// record returns a.rec moved to state s.
func (a *Agent) record(s State, target, why string) Record {
	return Record{Name: a.node.Name(), Version: a.node.Version(), State: s, Target: target, Reason: why, Updated: a.cfg.Clock().UTC()}
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
	if rec.State != a.rec.State || rec.Reason != a.rec.Reason {
		a.log("fleet-state", "state", rec.State, "version", rec.Version, "target", rec.Target, "reason", rec.Reason)
	}
	a.rec = rec
}

func (a *Agent) log(name string, kv ...any) {
	a.cfg.Log.Log(name, append([]any{"node", a.node.Name()}, kv...)...)
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
