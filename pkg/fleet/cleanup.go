package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/abboot/abboot/pkg/bundle"
)

// Cleanup deletes the keys of old rollouts under prefix (P/rollouts/V/...)
// and returns the versions it deleted, newest first. It keeps the keep
// newest rollouts (by version), the desired version's, and every rollout
// an agent still needs: one that a node is moving to and has not settled
// (committed, rolled back, halted or idle), or one whose canary slots are
// still held under a lease. Deleting a rollout forgets its failures, so a
// node that rolled back from V would try V again were it desired again.
//
// It deletes in one transaction that checks that the desired version did
// not change and that no canary slot of a deleted rollout was taken since
// it looked; no other node can start a version that is not desired. When
// the check fails it looks again, a few times.
func Cleanup(ctx context.Context, cli *clientv3.Client, prefix string, keep int) ([]string, error) {
	p := keys(prefix)
	if !p.valid() {
		return nil, fmt.Errorf("prefix %q: want /a/path without a trailing slash", prefix)
	}
	if keep < 0 {
		return nil, fmt.Errorf("keep %d: want at least 0", keep)
	}
	for range 3 {
		deleted, ok, err := cleanup(ctx, cli, p, keep)
		if err != nil || ok {
			return deleted, err
		}
	}
	return nil, fmt.Errorf("cleaning up the rollouts under %s: the desired version or the canaries kept changing", prefix)
}

// cleanup is one try of Cleanup; it reports false if the fleet changed
// under it.
func cleanup(ctx context.Context, cli *clientv3.Client, p keys, keep int) ([]string, bool, error) {
	st, err := Status(ctx, cli, string(p))
	if err != nil {
		return nil, false, err
	}
	versions, err := rolloutVersions(ctx, cli, p, st.Revision)
	if err != nil {
		return nil, false, err
	}
	needed := map[string]bool{st.Desired.Version: true}
	for _, r := range st.Nodes {
		if !slices.Contains([]State{StateIdle, StateCommitted, StateRolledBack, StateHalted}, r.State) {
			needed[r.Target] = true
		}
	}
	rev := st.Revision
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(p.desired()), "<", rev+1)}
	var ops []clientv3.Op
	var deleted []string
	for _, v := range versions[min(keep, len(versions)):] {
		if needed[v] {
			continue
		}
		slots := p.canaries(v) + "slot/"
		resp, err := cli.Get(ctx, slots, clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(rev))
		if err != nil {
			return nil, false, fmt.Errorf("reading the canaries of %s: %w", v, err)
		}
		if resp.Count > 0 {
			continue
		}
		// No slot exists: every key in the (empty) range has create
		// revision 0.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(slots), "=", 0).WithPrefix())
		ops = append(ops, clientv3.OpDelete(p.rollout(v), clientv3.WithPrefix()))
		deleted = append(deleted, v)
	}
	if len(ops) == 0 {
		return nil, true, nil
	}
	resp, err := cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return nil, false, fmt.Errorf("deleting the rollouts %s: %w", strings.Join(deleted, ", "), err)
	}
	if !resp.Succeeded {
		return nil, false, nil
	}
	return deleted, true, nil
}

// rolloutVersions lists the versions that have keys under P/rollouts/ at
// revision rev, newest first. It reads one key per version, skipping over
// the rest of each rollout's keys, so its cost grows with the rollouts,
// not with their keys.
func rolloutVersions(ctx context.Context, cli *clientv3.Client, p keys, rev int64) ([]string, error) {
	end := clientv3.GetPrefixRangeEnd(p.rollouts())
	var versions []string
	for from := p.rollouts(); ; {
		resp, err := cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(1), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
		if err != nil {
			return nil, fmt.Errorf("listing the rollouts under %s: %w", p.rollouts(), err)
		}
		if len(resp.Kvs) == 0 {
			break
		}
		v, _, _ := strings.Cut(strings.TrimPrefix(string(resp.Kvs[0].Key), p.rollouts()), "/")
		versions = append(versions, v)
		from = clientv3.GetPrefixRangeEnd(p.rollout(v))
	}
	slices.SortStableFunc(versions, func(a, b string) int {
		c, _ := bundle.CompareVersions(b, a)
		return c
	})
	return versions, nil
}
