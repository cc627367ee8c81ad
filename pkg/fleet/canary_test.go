package fleet

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestCanaries rolls out with two canaries: a bad release halts after the
// canaries alone, whatever the budget; a good one reaches the other nodes
// only after both canaries soaked, by etcd's revisions.
func TestCanaries(t *testing.T) {
	const nodes, canaries = 12, 2
	for _, tc := range []struct {
		name string
		bad  bool
	}{{"bad release", true}, {"good release", false}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, Config{MaxRebooting: 3, MaxFailures: 5, Canaries: canaries, Soak: 300 * time.Millisecond,
				Window: always(t), LeaseTTL: 3 * time.Second, Poll: 100 * time.Millisecond})
			for i := range nodes {
				s.node(fmt.Sprintf("node-%02d", i), "1.0", tc.bad)
			}
			s.waitFor("all nodes idle", 10*time.Second, func(st FleetStatus) bool { return countStates(st)[StateIdle] == nodes })
			s.setDesired("2.0")
			cli := newClient(t, s.endpoint)
			defer cli.Close()
			p := keys(s.cfg.Prefix)
			if tc.bad {
				st := s.waitFor("the halt", 30*time.Second, func(st FleetStatus) bool {
					c := countStates(st)
					return st.Rollout.Halted != "" && len(st.Places) == 0 &&
						c[StateRebooting]+c[StateDraining] == 0 && c[StateHalted] == nodes-int(st.Rollout.Started)
				})
				ro := st.Rollout
				if int(ro.Started) > canaries || int(ro.Failed) > canaries || !strings.Contains(ro.Halted, "canary") {
					t.Errorf("rollout %+v: want at most the %d canaries started and failed, halted by a canary", ro, canaries)
				}
				s.checkHolding()
				return
			}
			s.waitFor("all committed", 30*time.Second, func(st FleetStatus) bool {
				return countStates(st)[StateCommitted] == nodes && len(st.Places) == 0
			})
			s.checkHolding()
			gate, err := cli.Get(context.Background(), p.gate("2.0"))
			if err != nil || len(gate.Kvs) != 1 {
				t.Fatalf("reading the gate: %v", err)
			}
			soaked, err := cli.Get(context.Background(), p.canaries("2.0")+"soaked/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			started, err := cli.Get(context.Background(), p.rollout("2.0")+"started/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			before := 0
			for _, kv := range started.Kvs {
				if kv.CreateRevision < gate.Kvs[0].CreateRevision {
					before++
				}
			}
			for _, kv := range soaked.Kvs {
				if kv.CreateRevision > gate.Kvs[0].CreateRevision {
					t.Errorf("%s soaked after the gate opened", kv.Key)
				}
			}
			if before != canaries || len(soaked.Kvs) != canaries {
				t.Errorf("%d nodes started and %d soaked before the gate opened, want the %d canaries", before, len(soaked.Kvs), canaries)
			}
		})
	}
}
