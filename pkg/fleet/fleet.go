// Package fleet rolls an update across many abboot nodes, the way locksmith
// did for CoreOS: etcd is the coordinator, and nothing else stands in for
// it. Each node runs an Agent that learns the desired version (from an etcd
// key it watches, or from a signed channel file over HTTP(S)), stages the
// bundle into its inactive slot in the background, waits for its
// maintenance window, takes one of MaxRebooting places in an etcd
// semaphore, runs a pre-reboot hook (drain), reboots, reports after the
// reboot whether the new version committed or rolled back, runs a
// post-commit hook (uncordon) and gives its place back. Rollbacks count
// against a failure budget; when a rollout's failures reach MaxFailures it
// halts and no further node starts it.
//
// It does not build, sign or serve bundles (package bundle, abctl install
// do), decide whether the new version is healthy (the Node does: abctl's
// Node asks the slot state and an optional health command), nor run etcd.
//
// # Keys
//
// Everything lives under one prefix P (e.g. "/abboot/fleet"):
//
//	P/desired                       JSON Desired {version, url}: what the fleet should run
//	P/nodes/NAME                    JSON Record: a node's version, state, target (no lease)
//	P/places/NAME                   a node's place in the semaphore, under its lease
//	P/rollouts/V/started/NAME       NAME took a place and went to reboot into V
//	P/rollouts/V/failures/NAME      NAME rolled back from V, and why
//	P/rollouts/V/halted             why the rollout of V halted
//	P/rollouts/V/canary/slot/I      canary I of V (0 <= I < Canaries), the node's name, under its lease
//	P/rollouts/V/canary/soaked/NAME canary NAME stayed healthy for the soak time
//	P/rollouts/V/canary/gate        the canaries soaked: every other node may start V
//
// # The semaphore
//
// etcd's concurrency package has a mutex but no counting semaphore, so this
// package uses the standard recipe: every node that wants a place creates
// P/places/NAME under its session lease; the keys ordered by create
// revision form a FIFO queue, and a node holds a place while fewer than
// MaxRebooting keys are older than its own. A waiter reads the MaxRebooting
// keys nearest ahead of it (a bounded read) and watches only the farthest
// of them for its deletion: etcd's lock recipe, which watches the one key
// ahead, widened to MaxRebooting. A release therefore wakes about one
// waiter, not the queue, and a rollout costs each node a constant number
// of requests whatever the fleet's size. The woken waiter records that it
// drains in a transaction that also checks that no key older than the
// deleted one is left, which proves its place without reading the queue
// again; the hand-over of a place costs one write after the release. The
// watch starts at etcd's current revision (a watch that starts in the past
// waits for etcd's catch-up, every 100 ms), and a read covers the time
// between the queue's read and the watch.
// A node that dies stops renewing its lease, and etcd deletes its key when
// the lease's TTL runs out, so its place frees itself.
//
// # Cost
//
// Nothing is written when nothing changes, and nothing polls etcd: an idle,
// committed or halted agent waits on its watch of P/desired (and of the
// halted key); a waiter on its one watch, with no deadline but the end of
// its window. Every read of a list is bounded (a count, or a limit), except
// Status's, which is the operator's and reads a record per node but
// nothing of past rollouts (Cleanup deletes those). After an error the
// agent backs off, doubling from a second up to Poll, with jitter, so that
// a slow etcd gets fewer requests, not more.
//
// With Config.FleetLock the place comes from a FleetLock server instead
// (see FleetLock), which holds it by the node's ID across the reboot;
// etcd keeps everything else.
//
// # A place survives the reboot
//
// A node counts as rebooting from taking its place until its report after
// the reboot, and never more than MaxRebooting nodes are rebooting. A lease
// would die with the process that renews it, so the agent records its lease
// ID in P/nodes/NAME when it goes to reboot, and the agent that starts after
// the reboot adopts that lease (renews it again) instead of granting a new
// one: the place is held across the reboot by the same key. LeaseTTL must
// therefore cover a reboot (minutes on real hardware); it is also how long a
// node that dies holding a place blocks it. If the reboot outlasts the TTL
// the place is lost and the agent logs event=fleet-place-lost; that is the
// one way to exceed MaxRebooting, and a TTL shorter than a reboot is a
// misconfiguration. Locksmith held its lock until the node came back,
// forever for a node that never did; a lease bounds that.
//
// # Never reboot without a place
//
// Right before calling Node.Reboot the agent records state "rebooting" in a
// transaction that succeeds only if P/places/NAME still carries its
// lease (the lease has not expired and nobody took the place) and the
// rollout has not halted; then it checks that its session is still alive.
// If etcd is down or the lease was lost the agent stops before the reboot.
// The record also carries the node's boot ID, so an agent that finds
// "rebooting" but the same boot ID knows the reboot never happened and
// goes back to "staged" instead of counting a failure.
//
// # Failure budget
//
// After the reboot the agent asks Node.Healthy. A node running the target
// version and healthy is committed. Anything else is a rollback: the agent
// writes P/rollouts/V/failures/NAME, counts the failures and, when they
// reach MaxFailures, creates P/rollouts/V/halted with the reason. Agents
// check the budget before staging, after taking a place and (atomically,
// with the halted key) when going to reboot, so after the halt no node
// starts; nodes already rebooting finish, so failures can exceed the budget
// by at most MaxRebooting-1. A node never retries a version it rolled back
// from. To resume, the operator sets a new desired version (or deletes the
// rollout's keys).
//
// # Canaries
//
// With Canaries C > 0 a rollout starts on C canary nodes only: a node that
// finds fewer than C canary slots taken claims one (under its lease, so a
// canary that dies frees its slot) and goes as usual; the others wait. A
// canary that commits waits Soak, asks Node.Healthy again and records
// that it soaked; the last of the C opens the gate, and the other nodes
// go. A canary that fails halts the rollout whatever the budget, so a bad
// release halts after the canaries alone. The draining and rebooting
// transactions check the node's slot (a canary) or the gate (the rest)
// with the place and the halted key.
//
// Stopping an agent (its context ends) is treated like a crash: it does not
// release its place, and an agent started again for the same node adopts it.
package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/abboot/abboot/pkg/bundle"
)

// Desired is what the fleet should run: a version and where its bundle is.
type Desired struct {
	Version string `json:"version"`
	URL     string `json:"url"`
}

func (d Desired) validate() error {
	if _, err := bundle.CompareVersions(d.Version, d.Version); err != nil {
		return fmt.Errorf("desired version: %w", err)
	}
	if d.URL == "" {
		return fmt.Errorf("desired version %s has no bundle URL", d.Version)
	}
	return nil
}

// State is where a node is in a rollout.
type State string

// The states of a node. A node is counted as rebooting (holding a place)
// in StateDraining and StateRebooting.
const (
	StateIdle          State = "idle"           // running the desired version, or none is set
	StateStaging       State = "staging"        // downloading and installing the target into the inactive slot
	StateStaged        State = "staged"         // the target is installed, not yet running
	StateWaitingWindow State = "waiting-window" // staged, outside its maintenance window
	StateWaitingPlace  State = "waiting-place"  // staged, in its window, queued for a place
	StateDraining      State = "draining"       // holds a place, running the pre-reboot hook
	StateRebooting     State = "rebooting"      // holds a place, rebooting until its report
	StateCommitted     State = "committed"      // came back on the target and healthy
	StateRolledBack    State = "rolled-back"    // came back on another version or unhealthy
	StateHalted        State = "halted"         // the rollout of its target halted
	StateWaitingCanary State = "waiting-canary" // staged, in its window, waiting for the canaries to soak
)

// Record is a node's entry in P/nodes/NAME.
type Record struct {
	Name    string    `json:"name"`
	Version string    `json:"version"` // the version it runs
	State   State     `json:"state"`
	Target  string    `json:"target,omitempty"` // the version it is moving to
	Reason  string    `json:"reason,omitempty"` // why it is in State, when that is not obvious
	Lease   int64     `json:"lease,omitempty"`  // its place's lease while rebooting
	BootID  string    `json:"boot_id,omitempty"`
	Canary  string    `json:"canary,omitempty"` // "soaking" or "soaked" if the node is one of its target's canaries
	Updated time.Time `json:"updated"`
}

// keys names the keys under a prefix.
type keys string

func (p keys) desired() string               { return string(p) + "/desired" }
func (p keys) nodes() string                 { return string(p) + "/nodes/" }
func (p keys) node(name string) string       { return p.nodes() + name }
func (p keys) places() string                { return string(p) + "/places/" }
func (p keys) place(name string) string      { return p.places() + name }
func (p keys) rollouts() string              { return string(p) + "/rollouts/" }
func (p keys) rollout(v string) string       { return p.rollouts() + v + "/" }
func (p keys) started(v, name string) string { return p.rollout(v) + "started/" + name }
func (p keys) failure(v, name string) string { return p.rollout(v) + "failures/" + name }
func (p keys) halted(v string) string        { return p.rollout(v) + "halted" }
func (p keys) canaries(v string) string      { return p.rollout(v) + "canary/" }
func (p keys) canarySlot(v string, i int) string {
	return fmt.Sprintf("%sslot/%d", p.canaries(v), i)
}
func (p keys) soaked(v, name string) string { return p.canaries(v) + "soaked/" + name }
func (p keys) gate(v string) string         { return p.canaries(v) + "gate" }

// valid reports whether p is an absolute etcd path without a trailing
// slash, so that the keys above cannot run into a neighbour's.
func (p keys) valid() bool {
	return strings.HasPrefix(string(p), "/") && !strings.HasSuffix(string(p), "/")
}

func validName(name string) bool { return name != "" && !strings.ContainsAny(name, "/\r\n") }

// jsonOf marshals v, which is one of this package's plain structs and so
// cannot fail.
func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func newerThan(a, b string) (bool, error) {
	c, err := bundle.CompareVersions(a, b)
	return c > 0, err
}

func holding(s State) bool { return s == StateDraining || s == StateRebooting }

// SetDesired sets the version the fleet under prefix should run.
func SetDesired(ctx context.Context, cli *clientv3.Client, prefix string, d Desired) error {
	if !keys(prefix).valid() {
		return fmt.Errorf("prefix %q: want /a/path without a trailing slash", prefix)
	}
	if err := d.validate(); err != nil {
		return err
	}
	if _, err := cli.Put(ctx, keys(prefix).desired(), jsonOf(d)); err != nil {
		return fmt.Errorf("setting the desired version: %w", err)
	}
	return nil
}

// Rollout is what etcd knows about the rollout of one version.
type Rollout struct {
	Version  string            `json:"version"`
	Started  int64             `json:"started"`  // nodes that went to reboot into it
	Failed   int64             `json:"failed"`   // nodes that rolled back from it
	Failures map[string]string `json:"failures"` // node name: why it failed; the first failuresListed, by name
	Halted   string            `json:"halted,omitempty"`
}

// failuresListed bounds the failures Status lists: a halt stops a rollout
// after MaxFailures+MaxRebooting-1 of them, and the count says the rest.
const failuresListed = 20

// Place is one entry of the semaphore's queue.
type Place struct {
	Node    string `json:"node"`
	Lease   int64  `json:"lease"`
	Holding bool   `json:"holding"` // the node says it holds the place (draining or rebooting); else queued
}

// FleetStatus is the state of a fleet at one etcd revision.
type FleetStatus struct {
	Revision int64    `json:"revision"`
	Desired  Desired  `json:"desired"`
	Nodes    []Record `json:"nodes"`   // by name
	Places   []Place  `json:"places"`  // in queue order
	Rollout  Rollout  `json:"rollout"` // of the desired version
}

// Status reads the state of the fleet under prefix at one revision, so it
// is consistent: the nodes, the queue and the rollout of the desired
// version, whose started and failed nodes are counted, not read. Its cost
// grows with the fleet (a record per node) but not with past rollouts,
// which it does not read (see Cleanup).
func Status(ctx context.Context, cli *clientv3.Client, prefix string) (FleetStatus, error) {
	p := keys(prefix)
	if !p.valid() {
		return FleetStatus{}, fmt.Errorf("prefix %q: want /a/path without a trailing slash", prefix)
	}
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(p.desired()),
		clientv3.OpGet(p.nodes(), clientv3.WithPrefix()),
		clientv3.OpGet(p.places(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)),
	).Commit()
	if err != nil {
		return FleetStatus{}, fmt.Errorf("reading the fleet under %s: %w", prefix, err)
	}
	st := FleetStatus{Revision: resp.Header.Revision}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		if err := json.Unmarshal(kvs[0].Value, &st.Desired); err != nil {
			return FleetStatus{}, fmt.Errorf("%s: %w", kvs[0].Key, err)
		}
	}
	states := map[string]State{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var r Record
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return FleetStatus{}, fmt.Errorf("%s: %w", kv.Key, err)
		}
		st.Nodes = append(st.Nodes, r)
		states[r.Name] = r.State
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		name := strings.TrimPrefix(string(kv.Key), p.places())
		st.Places = append(st.Places, Place{Node: name, Lease: kv.Lease, Holding: holding(states[name])})
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Name < st.Nodes[j].Name })
	if st.Desired.Version == "" {
		return st, nil
	}
	if err := st.Desired.validate(); err != nil {
		return FleetStatus{}, err
	}
	if st.Rollout, err = readRollout(ctx, cli, p, st.Desired.Version, st.Revision); err != nil {
		return FleetStatus{}, err
	}
	return st, nil
}

// readRollout reads the rollout of v at revision rev in one bounded read.
func readRollout(ctx context.Context, cli *clientv3.Client, p keys, v string, rev int64) (Rollout, error) {
	failures := p.rollout(v) + "failures/"
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(p.rollout(v)+"started/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(rev)),
		clientv3.OpGet(failures, clientv3.WithPrefix(), clientv3.WithLimit(failuresListed), clientv3.WithRev(rev)),
		clientv3.OpGet(p.halted(v), clientv3.WithRev(rev)),
	).Commit()
	if err != nil {
		return Rollout{}, fmt.Errorf("reading the rollout of %s: %w", v, err)
	}
	fr := resp.Responses[1].GetResponseRange()
	ro := Rollout{Version: v, Started: resp.Responses[0].GetResponseRange().Count, Failed: fr.Count, Failures: map[string]string{}}
	for _, kv := range fr.Kvs {
		ro.Failures[strings.TrimPrefix(string(kv.Key), failures)] = string(kv.Value)
	}
	if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) == 1 {
		ro.Halted = string(kvs[0].Value)
	}
	return ro, nil
}

// Progress is how far the rollout of the desired version has come.
type Progress struct {
	Version   string        `json:"version"`
	Total     int           `json:"total"`     // nodes with a record
	Committed int           `json:"committed"` // running Version: committed, or idle on it
	InFlight  int           `json:"in_flight"` // holding a place: draining or rebooting
	Failed    int           `json:"failed"`    // rolled back from Version
	Halted    bool          `json:"halted"`
	Left      time.Duration `json:"left"` // estimated time until the rest committed, 0 if unknown
}

// Progress sums up st's nodes against the desired version. The estimate
// of the time left assumes the rate of commits so far (between the first
// and the last commit recorded) goes on; it needs two commits.
func (st FleetStatus) Progress() Progress {
	p := Progress{Version: st.Desired.Version, Total: len(st.Nodes)}
	var first, last time.Time
	commits := 0 // by this rollout
	for _, r := range st.Nodes {
		switch {
		case holding(r.State):
			p.InFlight++
		case r.State == StateRolledBack && r.Target == p.Version:
			p.Failed++
		case r.Version == p.Version && (r.State == StateCommitted || r.State == StateIdle):
			p.Committed++
			if r.State == StateCommitted && r.Target == p.Version {
				commits++
				if first.IsZero() || r.Updated.Before(first) {
					first = r.Updated
				}
				if r.Updated.After(last) {
					last = r.Updated
				}
			}
		}
	}
	p.Halted = st.Rollout.Version == p.Version && st.Rollout.Halted != ""
	if left := p.Total - p.Committed - p.Failed; left > 0 && !p.Halted && last.After(first) && commits > 1 {
		perNode := last.Sub(first) / time.Duration(commits-1)
		p.Left = perNode * time.Duration(left)
	}
	return p
}
