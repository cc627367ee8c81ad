package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// place is how a node takes its place among those that may reboot: etcd's
// semaphore, or a FleetLock server.
type place interface {
	// queue commits ops (the node's record) and queues the node.
	queue(ctx context.Context, ops ...clientv3.Op) error
	// acquire waits until the node holds a place, or ctx ends. Then it
	// asks start for the operations that start the node (the draining
	// record) and commits them in one transaction that checks cmps and
	// that the place is the node's, so that starting costs no request of
	// its own. It reports whether they were committed: a node that holds
	// a place but did not commit them (start said not to, or cmps failed)
	// should give the place back.
	acquire(ctx context.Context, start startFunc, cmps ...clientv3.Cmp) (bool, error)
	// release gives the place, or the spot in the queue, back.
	release(ctx context.Context) error
	// holds is what holds in etcd as long as the place is the node's.
	holds() []clientv3.Cmp
	// adopted reports whether the session found a place taken before
	// it started (before the reboot).
	adopted() bool
}

// startFunc returns the operations that start a node that holds a place,
// or false if it should not start after all.
type startFunc func() (ops []clientv3.Op, ok bool, err error)

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
//
// A waiter woken by that deletion does not read the queue again: it
// commits its start at once, in a transaction that also checks that no key
// older than the deleted one is left (a compare over the whole prefix:
// every create revision is greater). Only the n-1 keys between the deleted
// one and the waiter's can then be ahead of it, so it holds a place. If an
// older key is left (a holder slower than the one that went), the
// transaction's else branch is the read that the next round starts from.
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
// ends, and then commits start's operations (see place). Each round is a
// read of the n nearest keys ahead and of s's own key, and a wait for the
// farthest of them to go (gone). The request that follows a wake is the
// transaction that commits the operations; its else branch is the next
// round's read.
func (s *semaphore) acquire(ctx context.Context, start startFunc, cmps ...clientv3.Cmp) (bool, error) {
	if s.rev == 0 {
		return false, errNotQueued
	}
	// proof, once known is set, is what shows in etcd, with s's key, that
	// s holds a place: nothing after a read found fewer than n ahead.
	known, proof := s.in, []clientv3.Cmp(nil)
	s.in = false
	mine := clientv3.Compare(clientv3.CreateRevision(s.key), "=", s.rev)
	for {
		var resp *clientv3.TxnResponse
		var err error
		if known {
			ops, ok, err := start()
			if !ok || err != nil {
				return false, err
			}
			resp, err = s.cli.Txn(ctx).
				If(append(append([]clientv3.Cmp{mine}, proof...), cmps...)...).
				Then(ops...).
				Else(s.reads(false)...).
				Commit()
			if err != nil {
				return false, fmt.Errorf("starting from place %s: %w", s.key, err)
			}
			if resp.Succeeded {
				return true, nil
			}
		} else {
			// A serializable read is enough: it shows s's key, so the
			// member has applied every older key's creation, and a
			// deletion it has not applied yet only makes the wait longer.
			if resp, err = s.cli.Txn(ctx).Then(s.reads(true)...).Commit(); err != nil {
				return false, fmt.Errorf("reading the places ahead: %w", err)
			}
		}
		if mine := resp.Responses[0].GetResponseRange().Kvs; len(mine) != 1 || mine[0].CreateRevision != s.rev {
			s.rev = 0
			return false, errNotQueued
		}
		r := resp.Responses[1].GetResponseRange()
		ahead := r.Kvs
		if len(ahead) < s.n {
			if known && proof == nil {
				return false, nil // s holds a place, and cmps failed
			}
			known, proof = true, nil
			continue
		}
		far := ahead[s.n-1]
		if err := s.gone(ctx, far, resp.Header.Revision); err != nil {
			return false, err
		}
		known, proof = true, nil
		if r.More {
			// Fewer than n are ahead unless a key older than far is.
			proof = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(s.prefix), ">", far.CreateRevision).WithPrefix()}
		}
		// Else exactly n were ahead and the farthest is gone: fewer than
		// n are, as keys only join the queue behind s's.
	}
}

// gone waits until kv, as read at revision rev, is deleted, or ctx ends.
// The watch starts at the member's current revision, not at rev+1: etcd
// serves a watch that starts in the past from its unsynced group, which it
// catches up only every 100 ms, and that delay would be the waiter's. A
// deletion between rev and the watch's start is found by one read, which
// must be linearizable (the member that serves it may not be the watch's).
func (s *semaphore) gone(ctx context.Context, kv *mvccpb.KeyValue, rev int64) error {
	// WithRequireLeader ends the watch when the member loses its leader
	// instead of waiting forever.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, string(kv.Key), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	for {
		wr, ok := <-wch
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case !ok:
			return fmt.Errorf("watching the place ahead: the watch ended")
		case wr.Err() != nil:
			return fmt.Errorf("watching the place ahead: %w", wr.Err())
		case len(wr.Events) > 0:
			return nil // a deletion: puts are filtered out
		case !wr.Created || wr.Header.Revision <= rev:
			continue
		}
		resp, err := s.cli.Get(ctx, string(kv.Key), clientv3.WithKeysOnly())
		if err != nil {
			return fmt.Errorf("reading the place ahead: %w", err)
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != kv.CreateRevision {
			return nil
		}
	}
}

// reads are s's own key and the n keys nearest ahead of it, nearest first.
func (s *semaphore) reads(serializable bool) []clientv3.Op {
	opts := []clientv3.OpOption{clientv3.WithKeysOnly()}
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	return []clientv3.Op{
		clientv3.OpGet(s.key, opts...),
		clientv3.OpGet(s.prefix, append(opts, clientv3.WithPrefix(), clientv3.WithMaxCreateRev(s.rev-1),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(int64(s.n)))...),
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
func (f *fleetLockPlace) acquire(ctx context.Context, start startFunc, cmps ...clientv3.Cmp) (bool, error) {
	b := backoff{max: f.max}
	for {
		err := f.f.Lock(ctx)
		if err == nil {
			held := true
			f.held = &held
			ops, ok, err := start()
			if !ok || err != nil {
				return false, err
			}
			resp, err := f.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
			if err != nil {
				return false, fmt.Errorf("starting with the FleetLock slot: %w", err)
			}
			return resp.Succeeded, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		var e *FleetLockError
		if !errors.As(err, &e) || e.Kind != fleetLockFull {
			f.logError("fleet-error", err)
		}
		if !sleep(ctx, b.wait()) {
			return false, ctx.Err()
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
