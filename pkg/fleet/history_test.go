package fleet

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// events is etcd's history of a prefix, every event in revision order, so
// that tests judge what happened by etcd's order, not by the clock.
type events []*clientv3.Event

// history replays the watch history of everything under prefix from
// revision 1 to now (the test etcd never compacts). It marks the end with
// a key of its own, prefix+"history/end" (no node's key, as names have no
// "/"), and deletes it again: etcd 3.4's progress notifications may come
// before the events they vouch for, so they cannot tell the end.
func history(t testing.TB, cli *clientv3.Client, prefix string) events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	end := prefix + "history/end"
	put, err := cli.Put(ctx, end, "")
	if err != nil {
		t.Fatalf("marking the end of the history: %v", err)
	}
	defer cli.Delete(ctx, end)
	var h events
	for wr := range cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1)) {
		if err := wr.Err(); err != nil {
			t.Fatalf("replaying %s: %v", prefix, err)
		}
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision >= put.Header.Revision {
				return h
			}
			h = append(h, ev)
		}
	}
	t.Fatalf("replaying %s: the watch ended", prefix)
	return nil
}

// deleted returns the revision key was first deleted at, 0 if never.
func (h events) deleted(key string) int64 {
	for _, ev := range h {
		if ev.Type == mvccpb.DELETE && string(ev.Kv.Key) == key {
			return ev.Kv.ModRevision
		}
	}
	return 0
}

// maxHolding returns the most nodes that held a place at one revision of
// the fleet under p. A node holds from the revision its record first says
// draining or rebooting until the revision its place key is deleted (by
// its release or its lease running out): what the safety promise bounds.
// h must cover p's nodes/ and places/.
func (h events) maxHolding(p keys) int {
	in := map[string]bool{}
	most := 0
	for _, ev := range h {
		k := string(ev.Kv.Key)
		switch {
		case ev.Type == mvccpb.PUT && strings.HasPrefix(k, p.nodes()):
			var r Record
			if json.Unmarshal(ev.Kv.Value, &r) == nil && holding(r.State) {
				in[r.Name] = true
			}
		case ev.Type == mvccpb.DELETE && strings.HasPrefix(k, p.places()):
			delete(in, strings.TrimPrefix(k, p.places()))
		}
		most = max(most, len(in))
	}
	return most
}
