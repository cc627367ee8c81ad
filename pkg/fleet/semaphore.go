package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// place is how a node takes its place among those that may reboot: etcd's
// semaphore, or a FleetLock server.
type place interface {
	// queue commits ops (the node's record) and queues the node.
	queue(ctx context.Context, ops ...clientv3.Op) error
	// acquire waits until the node holds a place, or ctx ends.
	acquire(ctx context.Context) error
	// release gives the place, or the spot in the queue, back.
	release(ctx context.Context) error
	// holds is what holds in etcd as long as the place is the node's.
	holds() []clientv3.Cmp
	// adopted reports whether the session found a place taken before
	// it started (before the reboot).
	adopted() bool
}

// semaphore is a counting semaphore of n places in etcd, the standard
// recipe (see the package documentation): one key per node under a prefix,
// held under the node's lease; a node holds a place while fewer than n keys
// are older (by create revision) than its own.
//
// Its cost per waiter does not grow with the queue: a waiter reads at most
// n keys and watches one, the key n places ahead of it, which is the only
// key whose deletion can be the one that lets it in while the queue ahead
// only empties in order (etcd's lock recipe, where n is 1, watches the
// predecessor the same way). A waiter that leaves the queue from further
// ahead lets a waiter behind it in only when that watched key goes, which
// is later than possible, never too early.
type semaphore struct {
	cli    *clientv3.Client
	prefix string // the queue, e.g. P/places/
	key    string // this node's key under prefix
	lease  clientv3.LeaseID
	n      int
	rev    int64 // the create revision of key, 0 if this agent knows of no key
	// in is set by queue when the key it created was among the first n:
	// acquire need not read.
	in bool
}

// errNotQueued is returned by acquire when s's key is gone: its lease
// expired or somebody deleted it.
var errNotQueued = errors.New("the place's key is gone")

// queue creates s's key unless it exists, in one transaction with ops
// (the node's record), whichever way it goes. Queueing again keeps the old
// key and so the node's place in the queue.
func (s *semaphore) queue(ctx context.Context, ops ...clientv3.Op) error {
	// The count, after the put, is of s's key and the older ones: the
	// new key is the newest. Counting (no filter, no sort) is cheap.
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.key), "=", 0)).
		Then(append([]clientv3.Op{clientv3.OpPut(s.key, "", clientv3.WithLease(s.lease)),
			clientv3.OpGet(s.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())}, ops...)...).
		Else(append([]clientv3.Op{clientv3.OpGet(s.key)}, ops...)...).
		Commit()
	if err != nil {
		return fmt.Errorf("queueing for a place: %w", err)
	}
	if resp.Succeeded {
		s.rev = resp.Header.Revision
		s.in = resp.Responses[1].GetResponseRange().Count <= int64(s.n)
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return fmt.Errorf("queueing for a place: %s vanished", s.key)
	}
	if clientv3.LeaseID(kvs[0].Lease) != s.lease {
		return fmt.Errorf("place %s is held under lease %x, not this agent's %x", s.key, kvs[0].Lease, s.lease)
	}
	s.rev, s.in = kvs[0].CreateRevision, false
	return nil
}

// acquire waits until s's key, which queue created, holds a place, or ctx
// ends. Each round is one read (the n nearest keys ahead, and s's own key)
// and one watch on the farthest of them, from the revision after the read,
// so that a deletion between the read and the watch is not missed.
func (s *semaphore) acquire(ctx context.Context) error {
	if s.rev == 0 {
		return errNotQueued
	}
	if s.in {
		s.in = false
		return nil // keys only join the queue behind s's
	}
	for {
		// A serializable read is enough: it shows s's key, so the member
		// has applied every older key's creation, and a deletion it has
		// not applied yet only makes the wait longer.
		resp, err := s.cli.Txn(ctx).Then(
			clientv3.OpGet(s.key, clientv3.WithKeysOnly(), clientv3.WithSerializable()),
			clientv3.OpGet(s.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSerializable(), clientv3.WithMaxCreateRev(s.rev-1),
				clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(int64(s.n))),
		).Commit()
		if err != nil {
			return fmt.Errorf("reading the places ahead: %w", err)
		}
		if mine := resp.Responses[0].GetResponseRange().Kvs; len(mine) != 1 || mine[0].CreateRevision != s.rev {
			s.rev = 0
			return errNotQueued
		}
		r := resp.Responses[1].GetResponseRange()
		ahead := r.Kvs
		if len(ahead) < s.n {
			return nil
		}
		// WithRequireLeader ends the watch when the member loses its
		// leader instead of waiting forever.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, string(ahead[s.n-1].Key), clientv3.WithFilterPut(), clientv3.WithRev(resp.Header.Revision+1))
		wr, ok := <-wch
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case !ok:
			return fmt.Errorf("watching the place ahead: the watch ended")
		case wr.Err() != nil:
			return fmt.Errorf("watching the place ahead: %w", wr.Err())
		case !r.More:
			// Exactly n were ahead and the farthest is gone: fewer than
			// n are, as keys only join the queue behind s's. (If s's own
			// key went meanwhile, the holder's checks of its lease see it.)
			return nil
		}
	}
}

func (s *semaphore) holds() []clientv3.Cmp {
	return []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(s.key), "=", s.lease)}
}

func (s *semaphore) adopted() bool { return s.rev != 0 }

// release gives s's place (or its spot in the queue) back, if it has one.
// A key under another lease is not s's to delete.
func (s *semaphore) release(ctx context.Context) error {
	if s.rev == 0 {
		return nil
	}
	_, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(s.key), "=", s.lease)).
		Then(clientv3.OpDelete(s.key)).
		Commit()
	if err != nil {
		return fmt.Errorf("releasing place %s: %w", s.key, err)
	}
	s.rev, s.in = 0, false
	return nil
}

// fleetLockPlace takes the place from a FleetLock server, which holds it by
// the node's ID across the reboot.
type fleetLockPlace struct {
	f        *FleetLock
	cli      *clientv3.Client
	max      time.Duration // the longest wait between tries
	logError func(name string, err error, kv ...any)
	// held is whether the server may hold a slot for the node: unknown
	// (so true) when the session starts, as after a crash.
	held *bool
}

func (f *fleetLockPlace) queue(ctx context.Context, ops ...clientv3.Op) error {
	if _, err := f.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("recording the wait for a place: %w", err)
	}
	return nil
}

// acquire asks for a slot until it gets one, backing off (with jitter)
// while the semaphore is full or the server fails.
func (f *fleetLockPlace) acquire(ctx context.Context) error {
	b := backoff{max: f.max}
	for {
		err := f.f.Lock(ctx)
		if err == nil {
			held := true
			f.held = &held
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var e *FleetLockError
		if !errors.As(err, &e) || e.Kind != fleetLockFull {
			f.logError("fleet-error", err)
		}
		if !sleep(ctx, b.wait()) {
			return ctx.Err()
		}
	}
}

func (f *fleetLockPlace) release(ctx context.Context) error {
	if f.held != nil && !*f.held {
		return nil
	}
	if err := f.f.Unlock(ctx); err != nil {
		return err
	}
	held := false
	f.held = &held
	return nil
}

func (f *fleetLockPlace) holds() []clientv3.Cmp { return nil }
func (f *fleetLockPlace) adopted() bool         { return true }
