package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
	"time"
)

// fleetLockServer is a FleetLock server as the protocol describes it
// (https://coreos.github.io/zincati/development/fleetlock/protocol/): a
// counting semaphore of slots with owned, recursive locks, errors as
// {"kind","value"} with a 4xx status, the semaphore-full error as in the
// protocol's example.
type fleetLockServer struct {
	slots int

	mu      sync.Mutex
	holders map[string]bool
	most    int
}

var groupRE = regexp.MustCompile(`^[a-zA-Z0-9.-]+$`)

func (s *fleetLockServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, kind, value string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"kind": kind, "value": value})
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "bad_method", "POST only")
		return
	}
	if r.Header.Get("fleet-lock-protocol") != "true" {
		fail(http.StatusBadRequest, "missing_header", "fleet-lock-protocol header must be set to true")
		return
	}
	var body struct {
		ClientParams *struct {
			ID    string `json:"id"`
			Group string `json:"group"`
		} `json:"client_params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.ClientParams == nil || body.ClientParams.ID == "" || !groupRE.MatchString(body.ClientParams.Group) {
		fail(http.StatusBadRequest, "failed_parsing_body", "bad client_params")
		return
	}
	id := body.ClientParams.Group + "/" + body.ClientParams.ID
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.URL.Path {
	case "/base/v1/pre-reboot":
		if !s.holders[id] && len(s.holders) >= s.slots {
			fail(http.StatusConflict, "failed_lock_semaphore_full", "semaphore currently full, all slots are locked already")
			return
		}
		s.holders[id] = true
		s.most = max(s.most, len(s.holders))
	case "/base/v1/steady-state":
		delete(s.holders, id)
	default:
		fail(http.StatusNotFound, "not_found", r.URL.Path)
	}
}

func newFleetLockServer(t *testing.T, slots int) (*fleetLockServer, string) {
	s := &fleetLockServer{slots: slots, holders: map[string]bool{}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL + "/base"
}

func TestFleetLockClient(t *testing.T) {
	_, url := newFleetLockServer(t, 1)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream unavailable", http.StatusBadGateway)
	}))
	defer proxy.Close()
	a := &FleetLock{URL: url, ID: "c988d2509fdf5cdcbed39037c56406fb"}
	b := &FleetLock{URL: url + "/", ID: "b", Group: "default"}
	for _, tc := range []struct {
		name      string
		op        func(context.Context) error
		status    int // 0: success
		kind, val string
	}{
		{"a locks", a.Lock, 0, "", ""},
		{"a locks again (recursive)", a.Lock, 0, "", ""},
		{"b finds the semaphore full", b.Lock, http.StatusConflict, "failed_lock_semaphore_full", "semaphore currently full, all slots are locked already"},
		{"b unlocks what it does not hold", b.Unlock, 0, "", ""},
		{"a unlocks", a.Unlock, 0, "", ""},
		{"b locks", b.Lock, 0, "", ""},
		{"a bad group", (&FleetLock{URL: url, ID: "a", Group: "no spaces"}).Lock, http.StatusBadRequest, "failed_parsing_body", "bad client_params"},
		{"an error that is not the protocol's", (&FleetLock{URL: proxy.URL, ID: "a"}).Lock, http.StatusBadGateway, "", "upstream unavailable"},
	} {
		err := tc.op(context.Background())
		var e *FleetLockError
		switch {
		case tc.status == 0 && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.status == 0:
		case !errors.As(err, &e):
			t.Errorf("%s: error %v, want a *FleetLockError", tc.name, err)
		case e.Status != tc.status || e.Kind != tc.kind || e.Value != tc.val:
			t.Errorf("%s: %+v, want status %d, kind %q, value %q", tc.name, *e, tc.status, tc.kind, tc.val)
		}
	}
	// Without the header the server refuses: the client always sends it.
	resp, err := http.Post(url+"/v1/pre-reboot", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("the test server accepted a request without the header: %s", resp.Status)
	}
}

// TestFleetLockAgent rolls out with the places taken from a FleetLock
// server: never more than its slots reboot at once, each node holds its
// slot across the reboot and gives it back after the commit.
func TestFleetLockAgent(t *testing.T) {
	const nodes, slots = 8, 2
	srv, url := newFleetLockServer(t, slots)
	s := newSim(t, Config{MaxRebooting: slots, MaxFailures: 1, Window: always(t), LeaseTTL: 3 * time.Second, Poll: 200 * time.Millisecond})
	for i := range nodes {
		n := &fakeNode{s: s, name: fmt.Sprintf("node-%d", i), version: "1.0"}
		cfg := s.cfg
		cfg.FleetLock = &FleetLock{URL: url, ID: n.name}
		s.startWith(n, cfg)
	}
	s.waitFor("all nodes idle", 10*time.Second, func(st FleetStatus) bool { return countStates(st)[StateIdle] == nodes })
	s.setDesired("2.0")
	st := s.waitFor("all committed", 30*time.Second, func(st FleetStatus) bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return countStates(st)[StateCommitted] == nodes && len(srv.holders) == 0
	})
	if len(st.Places) != 0 {
		t.Errorf("etcd places taken with FleetLock: %+v", st.Places)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.most > slots {
		t.Errorf("the server saw %d holders, max %d", srv.most, slots)
	}
}
