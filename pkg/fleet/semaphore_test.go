package fleet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// TestSemaphoreProperty queues waiters on a real etcd, some of which die
// (they stop renewing their lease, which then expires) or lose their lease
// (revoked), while waiting or while holding, and checks by etcd's history
// that the queue admitted them in order and never more than n at once:
// whenever a waiter marked itself holding, its key was there and fewer
// than n older keys were.
func TestSemaphoreProperty(t *testing.T) {
	endpoint := startEtcd(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 0))
	for round := range 3 {
		n, waiters := 1+rnd.IntN(4), 10+rnd.IntN(10)
		prefix := fmt.Sprintf("/prop/%d/", round)
		var wg sync.WaitGroup
		var mu sync.Mutex
		died := 0
		for i := range waiters {
			// Each waiter draws its fate here, so that the seed decides it.
			fate, hold, delay := rnd.IntN(10), time.Duration(5+rnd.IntN(40))*time.Millisecond, time.Duration(rnd.IntN(200))*time.Millisecond
			wg.Add(1)
			go func() {
				defer wg.Done()
				cli := newClient(t, endpoint)
				defer cli.Close()
				sess, err := concurrency.NewSession(cli, concurrency.WithTTL(2))
				if err != nil {
					t.Error(err)
					return
				}
				defer sess.Orphan()
				s := &semaphore{cli: cli, prefix: prefix + "places/", key: fmt.Sprintf("%splaces/w%02d", prefix, i), lease: sess.Lease(), n: n}
				time.Sleep(delay)
				if err := s.queue(context.Background()); err != nil {
					t.Error(err)
					return
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				switch fate {
				case 0: // dies while waiting (or holding, if admitted at once)
					time.AfterFunc(hold, func() { sess.Orphan(); cancel() })
				case 1: // loses its lease while waiting
					time.AfterFunc(hold, func() { cli.Revoke(context.Background(), sess.Lease()) })
				}
				// Mark holding in the transaction that takes the place, as
				// the agent records draining, and only while the place is
				// still this lease's.
				mark := func() ([]clientv3.Op, bool, error) {
					return []clientv3.Op{clientv3.OpPut(prefix+"holding/"+s.key[len(s.prefix):], "")}, true, nil
				}
				started, err := s.acquire(ctx, mark, s.holds()...)
				if err != nil {
					if !errors.Is(err, context.Canceled) && !errors.Is(err, errNotQueued) {
						t.Errorf("acquire: %v", err)
					}
					return
				}
				if !started {
					return // lost on the way; not holding
				}
				// No count in the process: a revoked lease (fate 1 may
				// strike now) ends the hold in etcd before this sleep
				// ends, and etcd's history is what is checked.
				time.Sleep(hold)
				switch fate {
				case 2: // dies holding: the place frees itself when the lease expires
					mu.Lock()
					died++
					mu.Unlock()
					return
				case 3: // loses its lease holding
					cli.Revoke(context.Background(), sess.Lease())
					return
				}
				if err := s.release(context.Background()); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		cli := newClient(t, endpoint)
		checkAdmissions(t, history(t, cli, prefix), prefix, n)
		cli.Close()
		t.Logf("round %d: %d waiters, %d places, %d died holding", round, waiters, n, died)
	}
}

// checkAdmissions checks, event by event, that every holding/NAME mark
// was made while NAME's place key existed with fewer than n older keys.
func checkAdmissions(t *testing.T, h events, prefix string, n int) {
	t.Helper()
	live := map[string]int64{} // place key: create revision
	admitted := 0
	for _, ev := range h {
		k := string(ev.Kv.Key)
		switch {
		case strings.HasPrefix(k, prefix+"places/") && ev.Type == mvccpb.PUT:
			live[k] = ev.Kv.CreateRevision
		case strings.HasPrefix(k, prefix+"places/"):
			delete(live, k)
		case strings.HasPrefix(k, prefix+"holding/"):
			place := prefix + "places/" + strings.TrimPrefix(k, prefix+"holding/")
			rev, ok := live[place]
			if !ok {
				t.Errorf("%s marked holding at revision %d without its key", place, ev.Kv.ModRevision)
				continue
			}
			older := 0
			for _, r := range live {
				if r < rev {
					older++
				}
			}
			if older >= n {
				t.Errorf("%s admitted at revision %d with %d older keys queued, places %d", place, ev.Kv.ModRevision, older, n)
			}
			admitted++
		}
	}
	if admitted == 0 {
		t.Errorf("nobody was admitted")
	}
}
