package fleet

import (
	"context"
	"fmt"
	"slices"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// oldRollouts fills prefix on a real etcd with the rollouts of 1.0, 1.1
// (desired, an older version than some: rolled back to), 1.2 (a node is
// rebooting into it), 1.3 (its canary slot is held under a lease), 1.5
// and 2.0; 1.1 has 25 failures.
func oldRollouts(t *testing.T, cli *clientv3.Client, prefix string) {
	t.Helper()
	ctx := context.Background()
	p := keys(prefix)
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	ops := []clientv3.Op{
		clientv3.OpPut(p.desired(), jsonOf(Desired{Version: "1.1", URL: "https://updates.example/1.1"})),
		clientv3.OpPut(p.node("a"), jsonOf(Record{Name: "a", Version: "1.1", State: StateRebooting, Target: "1.2"})),
		clientv3.OpPut(p.node("b"), jsonOf(Record{Name: "b", Version: "1.1", State: StateCommitted, Target: "2.0"})),
		clientv3.OpPut(p.place("a"), "", clientv3.WithLease(lease.ID)),
		clientv3.OpPut(p.canarySlot("1.3", 0), "c", clientv3.WithLease(lease.ID)),
		clientv3.OpPut(p.halted("1.0"), "budget spent"),
	}
	for _, v := range []string{"1.0", "1.1", "1.2", "1.3", "1.5", "2.0"} {
		ops = append(ops, clientv3.OpPut(p.started(v, "a"), ""), clientv3.OpPut(p.started(v, "b"), ""))
	}
	for i := range 25 {
		ops = append(ops, clientv3.OpPut(p.failure("1.1", fmt.Sprintf("n%02d", i)), "unhealthy"))
	}
	// etcd takes at most 128 operations in a transaction.
	for len(ops) > 0 {
		n := min(len(ops), 100)
		if _, err := cli.Txn(ctx).Then(ops[:n]...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[n:]
	}
}

func TestStatusReadsTheDesiredRollout(t *testing.T) {
	cli := newClient(t, startEtcd(t))
	defer cli.Close()
	oldRollouts(t, cli, "/status")
	st, err := Status(context.Background(), cli, "/status")
	if err != nil {
		t.Fatal(err)
	}
	ro := st.Rollout
	if ro.Version != "1.1" || ro.Started != 2 || ro.Failed != 25 || len(ro.Failures) != failuresListed || ro.Halted != "" {
		t.Errorf("rollout = %+v, want 1.1 with 2 started, 25 failed of which %d listed, not halted", ro, failuresListed)
	}
	if len(st.Nodes) != 2 || len(st.Places) != 1 || !st.Places[0].Holding {
		t.Errorf("nodes %+v, places %+v: want a and b, a holding", st.Nodes, st.Places)
	}
}

func TestCleanup(t *testing.T) {
	cli := newClient(t, startEtcd(t))
	defer cli.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		keep int
		want []string // deleted
	}{
		{0, []string{"2.0", "1.5", "1.0"}},
		{1, []string{"1.5", "1.0"}},
		{3, []string{"1.0"}},
		{9, nil},
	} {
		prefix := fmt.Sprintf("/cleanup/%d", tc.keep)
		oldRollouts(t, cli, prefix)
		before, err := Status(ctx, cli, prefix)
		if err != nil {
			t.Fatal(err)
		}
		deleted, err := Cleanup(ctx, cli, prefix, tc.keep)
		if err != nil {
			t.Fatalf("keep %d: %v", tc.keep, err)
		}
		if !slices.Equal(deleted, tc.want) {
			t.Errorf("keep %d: deleted %q, want %q", tc.keep, deleted, tc.want)
		}
		left, err := rolloutVersions(ctx, cli, keys(prefix), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"2.0", "1.5", "1.3", "1.2", "1.1", "1.0"} {
			if slices.Contains(left, v) == slices.Contains(tc.want, v) {
				t.Errorf("keep %d: rollouts left %q, want all but %q", tc.keep, left, tc.want)
				break
			}
		}
		after, err := Status(ctx, cli, prefix)
		if err != nil {
			t.Fatal(err)
		}
		after.Revision = before.Revision
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("keep %d: the status changed:\n%+v\n%+v", tc.keep, before, after)
		}
	}
	if _, err := Cleanup(ctx, cli, "/cleanup/0", -1); err == nil {
		t.Errorf("keep -1: no error")
	}
}
