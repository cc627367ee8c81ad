package fleet

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/window"
)

// sim is a simulated fleet: each node is a fakeNode run by the real Agent
// on its own etcd client. A reboot ends the agent (Run returns, its client
// closes, as the process dies) and starts a new Agent for the node a
// little later.
type sim struct {
	t        *testing.T
	endpoint string
	cfg      Config
	ctx      context.Context
	wg       sync.WaitGroup

	mu        sync.Mutex
	rebooting int // nodes between PreReboot (place taken) and PostCommit (reported after the reboot)
	maxSeen   int
	reboots   int
}

type fakeNode struct {
	s    *sim
	name string
	bad  bool // the new version does not come up: the boot falls back to the old one

	mu        sync.Mutex
	version   string
	staged    string
	boot      int
	holding   bool
	preReboot time.Time     // when PreReboot last ran
	block     chan struct{} // if set, PreReboot waits for it or the end of ctx
	cli       *clientv3.Client
	cancel    context.CancelFunc
	cfg       *Config // if set, the node's agents run with it instead of the sim's
}

func newSim(t *testing.T, cfg Config) *sim {
	t.Helper()
	return newSimAt(t, startEtcd(t), cfg)
}

// newSimAt is newSim on the etcd at endpoint.
func newSimAt(t *testing.T, endpoint string, cfg Config) *sim {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &sim{t: t, endpoint: endpoint, cfg: cfg, ctx: ctx}
	if s.cfg.Prefix == "" {
		s.cfg.Prefix = "/test/fleet"
	}
	if s.cfg.Log == nil {
		s.cfg.Log = event.New(io.Discard)
	}
	t.Cleanup(func() {
		cancel()
		s.wg.Wait()
	})
	return s
}

func (s *sim) node(name, version string, bad bool) *fakeNode {
	n := &fakeNode{s: s, name: name, version: version, bad: bad}
	s.start(n)
	return n
}

// start runs a new Agent for n, as the agent's service does at boot.
func (s *sim) start(n *fakeNode) {
	n.mu.Lock()
	cfg := n.cfg
	n.mu.Unlock()
	if cfg == nil {
		cfg = &s.cfg
	}
	cli := newClient(s.t, s.endpoint)
	ctx, cancel := context.WithCancel(s.ctx)
	n.mu.Lock()
	n.cli, n.cancel = cli, cancel
	n.mu.Unlock()
	a := NewAgent(cli, n, *cfg)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := a.Run(ctx)
		cli.Close()
		if err != nil && ctx.Err() == nil {
			s.t.Errorf("agent of %s: %v", n.name, err)
		}
		cancel()
	}()
}

// startWith runs n with its own configuration.
func (s *sim) startWith(n *fakeNode, cfg Config) {
	n.cfg = &cfg
	s.start(n)
}

// kill makes n die on the spot: its client closes without releasing
// anything, and its agent stops.
func (n *fakeNode) kill() {
	n.mu.Lock()
	n.cli.Close()
	n.cancel()
	held := n.holding
	n.holding = false
	n.mu.Unlock()
	if held {
		n.s.leave()
	}
}

func (s *sim) enter() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rebooting++
	s.maxSeen = max(s.maxSeen, s.rebooting)
	if s.rebooting > s.cfg.MaxRebooting {
		s.t.Errorf("%d nodes rebooting at once, max %d", s.rebooting, s.cfg.MaxRebooting)
	}
}

func (s *sim) leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rebooting--
}

func (n *fakeNode) Name() string { return n.name }

func (n *fakeNode) Version() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.version
}

func (n *fakeNode) BootID() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return fmt.Sprintf("%s-boot-%d", n.name, n.boot)
}

func (n *fakeNode) Stage(ctx context.Context, d Desired) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.staged = d.Version
	return nil
}

func (n *fakeNode) PreReboot(ctx context.Context) error {
	n.mu.Lock()
	block := n.block
	n.holding = true
	n.preReboot = time.Now()
	n.mu.Unlock()
	n.s.enter()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	time.Sleep(10 * time.Millisecond) // draining takes a moment, so that holders overlap
	return nil
}

func (n *fakeNode) PostCommit(ctx context.Context) error {
	n.mu.Lock()
	held := n.holding
	n.holding = false
	n.mu.Unlock()
	if held {
		n.s.leave()
	}
	return nil
}

func (n *fakeNode) Reboot(ctx context.Context) error {
	n.mu.Lock()
	n.boot++
	if !n.bad {
		n.version = n.staged
	}
	n.mu.Unlock()
	n.s.mu.Lock()
	n.s.reboots++
	n.s.mu.Unlock()
	go func() {
		time.Sleep(100 * time.Millisecond)
		n.s.start(n)
	}()
	return nil
}

func (n *fakeNode) Healthy(ctx context.Context) (bool, error) { return true, nil }

// waitFor polls the fleet's status until done holds or the time is up.
func (s *sim) waitFor(what string, timeout time.Duration, done func(FleetStatus) bool) FleetStatus {
	s.t.Helper()
	cli := newClient(s.t, s.endpoint)
	defer cli.Close()
	var st FleetStatus
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		var err error
		if st, err = Status(context.Background(), cli, s.cfg.Prefix); err != nil {
			s.t.Fatalf("status: %v", err)
		}
		if done(st) {
			return st
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("waiting for %s: timed out; status: %+v", what, st)
		}
	}
}

// checkHolding checks by etcd's history that no more than MaxRebooting
// nodes held a place at any revision.
func (s *sim) checkHolding() {
	s.t.Helper()
	cli := newClient(s.t, s.endpoint)
	defer cli.Close()
	if most := history(s.t, cli, s.cfg.Prefix+"/").maxHolding(keys(s.cfg.Prefix)); most > s.cfg.MaxRebooting {
		s.t.Errorf("%d nodes held a place at one revision, max %d", most, s.cfg.MaxRebooting)
	}
}

func (s *sim) setDesired(v string) {
	s.t.Helper()
	cli := newClient(s.t, s.endpoint)
	defer cli.Close()
	if err := SetDesired(context.Background(), cli, s.cfg.Prefix, Desired{Version: v, URL: "https://updates.example/" + v}); err != nil {
		s.t.Fatal(err)
	}
}

func always(t *testing.T) window.Window {
	w, err := window.Parse("*", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func countStates(st FleetStatus) map[State]int {
	m := map[State]int{}
	for _, r := range st.Nodes {
		m[r.State]++
	}
	return m
}

// TestRollout rolls 2.0 onto 24 nodes, 3 at a time; two nodes fall back to
// 1.0, within the budget.
func TestRollout(t *testing.T) {
	const nodes, bad = 24, 2
	s := newSim(t, Config{MaxRebooting: 3, MaxFailures: 5, Window: always(t), LeaseTTL: 3 * time.Second, Poll: 100 * time.Millisecond})
	var fleet []*fakeNode
	for i := range nodes {
		fleet = append(fleet, s.node(fmt.Sprintf("node-%02d", i), "1.0", i%12 == 5))
	}
	s.waitFor("all nodes idle", 10*time.Second, func(st FleetStatus) bool { return countStates(st)[StateIdle] == nodes })
	s.setDesired("2.0")
	st := s.waitFor("the rollout to converge", 40*time.Second, func(st FleetStatus) bool {
		c := countStates(st)
		return c[StateCommitted] == nodes-bad && c[StateRolledBack] == bad && len(st.Places) == 0
	})

	for _, n := range fleet {
		want := "2.0"
		if n.bad {
			want = "1.0"
		}
		if got := n.Version(); got != want {
			t.Errorf("%s runs %s, want %s", n.name, got, want)
		}
	}
	for _, r := range st.Nodes {
		if r.State == StateCommitted && r.Version != "2.0" {
			t.Errorf("%s committed but records version %s", r.Name, r.Version)
		}
	}
	if ro := st.Rollout; ro.Version != "2.0" || ro.Started != nodes || ro.Failed != bad || len(ro.Failures) != bad || ro.Halted != "" {
		t.Errorf("rollout = %+v, want 2.0 started on %d nodes with %d failures, not halted", ro, nodes, bad)
	}
	s.checkHolding()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reboots != nodes {
		t.Errorf("%d reboots, want %d (one per node)", s.reboots, nodes)
	}
	if s.maxSeen < 2 || s.maxSeen > 3 {
		t.Errorf("at most %d nodes rebooted at once, want 2 or 3 (the semaphore must let 3 through, and no more)", s.maxSeen)
	}
}

// TestBudgetHalts rolls out a version half the nodes fail: the rollout
// halts at the budget and no node starts after the halt.
func TestBudgetHalts(t *testing.T) {
	const nodes, maxFailures, maxRebooting = 20, 3, 2
	s := newSim(t, Config{MaxRebooting: maxRebooting, MaxFailures: maxFailures, Window: always(t), LeaseTTL: 3 * time.Second, Poll: 100 * time.Millisecond})
	for i := range nodes {
		s.node(fmt.Sprintf("node-%02d", i), "1.0", i%2 == 0)
	}
	s.waitFor("all nodes idle", 10*time.Second, func(st FleetStatus) bool { return countStates(st)[StateIdle] == nodes })
	s.setDesired("2.0")
	// The final condition: halted, nobody holding, and every node that did
	// not start knows of the halt.
	st := s.waitFor("the halt", 30*time.Second, func(st FleetStatus) bool {
		c := countStates(st)
		return st.Rollout.Halted != "" && len(st.Places) == 0 &&
			c[StateRebooting]+c[StateDraining] == 0 && c[StateHalted] == nodes-int(st.Rollout.Started)
	})
	time.Sleep(time.Second) // give a wrong agent time to start anyway
	st = s.waitFor("the status", time.Second, func(FleetStatus) bool { return true })
	ro := st.Rollout
	t.Logf("halted: %s; started %d", ro.Halted, int(ro.Started))
	if int(ro.Failed) < maxFailures || int(ro.Failed) > maxFailures+maxRebooting-1 {
		t.Errorf("%d failures, want %d to %d", int(ro.Failed), maxFailures, maxFailures+maxRebooting-1)
	}
	if int(ro.Started) >= nodes {
		t.Errorf("all %d nodes started despite the halt", int(ro.Started))
	}
	c := countStates(st)
	if c[StateHalted] != nodes-int(ro.Started) {
		t.Errorf("%d nodes halted, want the %d that did not start; states %v", c[StateHalted], nodes-int(ro.Started), c)
	}

	s.checkHolding()
	// Every start came before the halt, by etcd's own revisions.
	cli := newClient(t, s.endpoint)
	defer cli.Close()
	p := keys(s.cfg.Prefix)
	halted, err := cli.Get(context.Background(), p.halted("2.0"))
	if err != nil || len(halted.Kvs) != 1 {
		t.Fatalf("reading the halted key: %v, %d keys", err, len(halted.Kvs))
	}
	started, err := cli.Get(context.Background(), p.rollout("2.0")+"started/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range started.Kvs {
		if kv.CreateRevision > halted.Kvs[0].CreateRevision {
			t.Errorf("%s started at revision %d, after the halt at %d", kv.Key, kv.CreateRevision, halted.Kvs[0].CreateRevision)
		}
	}
}

// TestKilledHolderFreesPlace kills a node holding the only place: the
// place frees itself when the lease runs out, and the next node goes.
func TestKilledHolderFreesPlace(t *testing.T) {
	const ttl = 2 * time.Second
	s := newSim(t, Config{MaxRebooting: 1, MaxFailures: 1, Window: always(t), LeaseTTL: ttl, Poll: 100 * time.Millisecond})
	a := &fakeNode{s: s, name: "a", version: "1.0", block: make(chan struct{})}
	s.start(a)
	s.waitFor("a idle", 10*time.Second, func(st FleetStatus) bool { return len(st.Nodes) == 1 })
	s.setDesired("2.0")
	s.waitFor("a draining", 10*time.Second, func(st FleetStatus) bool {
		return len(st.Nodes) == 1 && st.Nodes[0].State == StateDraining
	})
	b := s.node("b", "1.0", false)
	s.waitFor("b queued", 10*time.Second, func(st FleetStatus) bool {
		return len(st.Places) == 2 && st.Places[0].Node == "a" && st.Places[0].Holding && st.Places[1].Node == "b" && !st.Places[1].Holding
	})
	a.kill()
	// The final condition: b went through and gave its place back, after
	// the post-commit hook (the release is the last thing it does).
	st := s.waitFor("b to commit and give its place back", 10*time.Second, func(st FleetStatus) bool {
		for _, r := range st.Nodes {
			if r.Name == "b" && r.State == StateCommitted {
				return len(st.Places) == 0
			}
		}
		return false
	})
	if b.Version() != "2.0" || a.Version() != "1.0" {
		t.Errorf("a runs %s, b runs %s; want 1.0 and 2.0", a.Version(), b.Version())
	}
	if len(st.Places) != 0 {
		t.Errorf("places left: %+v", st.Places)
	}
	// b started only after a's place was gone, by etcd's revisions: the
	// deletion of a's key (its lease expiring) comes before b's start.
	cli := newClient(t, s.endpoint)
	defer cli.Close()
	p := keys(s.cfg.Prefix)
	h := history(t, cli, p.places())
	started, err := cli.Get(context.Background(), p.started("2.0", "b"))
	if err != nil || len(started.Kvs) != 1 {
		t.Fatalf("reading b's start: %v", err)
	}
	gone := h.deleted(p.place("a"))
	if gone == 0 || gone > started.Kvs[0].CreateRevision {
		t.Errorf("a's place went at revision %d, b started at %d: want a's gone first", gone, started.Kvs[0].CreateRevision)
	}
}

// TestWindowWaits: nodes stage at once but reboot only when their window
// opens.
func TestWindowWaits(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	w, err := window.Parse("Sat,Sun 02:00-05:00", berlin)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2026, 6, 3, 12, 0, 0, 0, berlin) // a Wednesday
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	s := newSim(t, Config{MaxRebooting: 2, MaxFailures: 1, Window: w, Clock: clock, LeaseTTL: 3 * time.Second, Poll: 50 * time.Millisecond})
	for i := range 4 {
		s.node(fmt.Sprintf("node-%d", i), "1.0", false)
	}
	s.setDesired("2.0")
	s.waitFor("all waiting for the window", 10*time.Second, func(st FleetStatus) bool {
		return countStates(st)[StateWaitingWindow] == 4
	})
	time.Sleep(300 * time.Millisecond)
	s.mu.Lock()
	reboots := s.reboots
	s.mu.Unlock()
	if reboots != 0 {
		t.Fatalf("%d reboots outside the window", reboots)
	}
	mu.Lock()
	now = time.Date(2026, 6, 6, 2, 30, 0, 0, berlin) // Saturday 02:30
	mu.Unlock()
	s.waitFor("all committed", 20*time.Second, func(st FleetStatus) bool { return countStates(st)[StateCommitted] == 4 })
}

func TestProgress(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 1, 1, 0, 0, s, 0, time.UTC) }
	desired := Desired{Version: "2.0"}
	for _, tc := range []struct {
		name  string
		nodes []Record
		halt  bool
		want  Progress
	}{
		{"nothing yet", []Record{{Version: "1.0", State: StateIdle}, {Version: "1.0", State: StateWaitingPlace, Target: "2.0"}}, false,
			Progress{Version: "2.0", Total: 2}},
		{"one commit: no estimate", []Record{{Version: "2.0", State: StateCommitted, Target: "2.0", Updated: at(10)}, {Version: "1.0", State: StateRebooting, Target: "2.0"}}, false,
			Progress{Version: "2.0", Total: 2, Committed: 1, InFlight: 1}},
		{"a commit every 10 s, 2 left", []Record{
			{Version: "2.0", State: StateCommitted, Target: "2.0", Updated: at(10)},
			{Version: "2.0", State: StateCommitted, Target: "2.0", Updated: at(30)},
			{Version: "2.0", State: StateCommitted, Target: "2.0", Updated: at(20)},
			{Version: "1.0", State: StateRolledBack, Target: "2.0"},
			{Version: "1.0", State: StateDraining, Target: "2.0"},
			{Version: "1.0", State: StateStaged, Target: "2.0"},
		}, false, Progress{Version: "2.0", Total: 6, Committed: 3, InFlight: 1, Failed: 1, Left: 20 * time.Second}},
		{"halted: no estimate", []Record{
			{Version: "2.0", State: StateCommitted, Target: "2.0", Updated: at(10)},
			{Version: "2.0", State: StateCommitted, Target: "2.0", Updated: at(20)},
			{Version: "1.0", State: StateHalted, Target: "2.0"},
		}, true, Progress{Version: "2.0", Total: 3, Committed: 2, Halted: true}},
	} {
		st := FleetStatus{Desired: desired, Nodes: tc.nodes}
		if tc.halt {
			st.Rollout = Rollout{Version: "2.0", Halted: "budget spent"}
		}
		if got := st.Progress(); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
