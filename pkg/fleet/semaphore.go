package fleet

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// semaphore is a counting semaphore of size n in etcd, the standard recipe
// (see the package documentation): one key per node under a prefix, held
// under the node's lease; a node holds a place while its key is among the
// n oldest by create revision.
type semaphore struct {
	cli    *clientv3.Client
	prefix string // the queue, e.g. P/places/
	key    string // this node's key under prefix
	lease  clientv3.LeaseID
	n      int
}

// acquire queues s's key, unless it is queued already, and waits until it
// is among the n oldest or ctx ends. Queueing again keeps the old key and so
// the node's place in the queue.
func (s *semaphore) acquire(ctx context.Context) error {
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.key), "=", 0)).
		Then(clientv3.OpPut(s.key, "", clientv3.WithLease(s.lease))).
		Else(clientv3.OpGet(s.key)).
		Commit()
	if err != nil {
		return fmt.Errorf("queueing for a place: %w", err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 1 && clientv3.LeaseID(kvs[0].Lease) != s.lease {
			return fmt.Errorf("place %s is held under lease %x, not this agent's %x", s.key, kvs[0].Lease, s.lease)
		}
	}
	for {
		first, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(int64(s.n)))
		if err != nil {
			return fmt.Errorf("reading the places: %w", err)
		}
		for _, kv := range first.Kvs {
			if string(kv.Key) == s.key {
				return nil
			}
		}
		// Wait for any deletion after the revision read: a holder leaving
		// or a lease expiring. WithRequireLeader ends the watch when the
		// member loses its leader instead of waiting forever.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithFilterPut(),
			clientv3.WithRev(first.Header.Revision+1))
		wr, ok := <-wch
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case !ok:
			return fmt.Errorf("watching the places: the watch ended")
		case wr.Err() != nil:
			return fmt.Errorf("watching the places: %w", wr.Err())
		}
	}
}

// holds reports whether s's key is still there under s's lease.
func (s *semaphore) holds(ctx context.Context) (bool, error) {
	resp, err := s.cli.Get(ctx, s.key)
	if err != nil {
		return false, fmt.Errorf("reading place %s: %w", s.key, err)
	}
	return len(resp.Kvs) == 1 && clientv3.LeaseID(resp.Kvs[0].Lease) == s.lease, nil
}

// release gives s's place (or its spot in the queue) back. A key under
// another lease is not s's to delete.
func (s *semaphore) release(ctx context.Context) error {
	_, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(s.key), "=", s.lease)).
		Then(clientv3.OpDelete(s.key)).
		Commit()
	if err != nil {
		return fmt.Errorf("releasing place %s: %w", s.key, err)
	}
	return nil
}
