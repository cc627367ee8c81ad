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
// revision 1 to the current revision (the test etcd never compacts).
func history(t testing.TB, cli *clientv3.Client, prefix string) events {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now, err := cli.Get(ctx, "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("reading the revision: %v", err)
	}
	var h events
	for wr := range cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1)) {
		if err := wr.Err(); err != nil {
			t.Fatalf("replaying %s: %v", prefix, err)
		}
		h = append(h, wr.Events...)
		if wr.Header.Revision >= now.Header.Revision {
			return h
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
