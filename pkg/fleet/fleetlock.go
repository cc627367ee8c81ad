package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// FleetLock is a client of the FleetLock protocol, with which Fedora
// CoreOS's Zincati takes its reboot slot from a server (airlock, or a
// Kubernetes FleetLock server that also drains the node). It is a counting
// semaphore with owned, recursive locks: POST {URL}/v1/pre-reboot locks a
// slot for ID, POST {URL}/v1/steady-state unlocks it if ID holds it; both
// send the header "fleet-lock-protocol: true" and the body
// {"client_params":{"id":ID,"group":GROUP}}, and any 200 is success.
// Errors SHOULD come as {"kind","value"} with a 4xx or 5xx status
// (https://coreos.github.io/zincati/development/fleetlock/protocol/).
//
// It gives an Agent its place instead of etcd's semaphore (Config.
// FleetLock); the server holds the lock by ID across the reboot, so no
// lease is needed.
type FleetLock struct {
	URL    string // base URL, e.g. https://fleetlock.example/base
	ID     string // the client's identifier, e.g. the node name
	Group  string // reboot group, ^[a-zA-Z0-9.-]+$; default "default"
	Client *http.Client
}

// groupName is the protocol's syntax of a reboot group.
var groupName = regexp.MustCompile(`^[a-zA-Z0-9.-]+$`)

// Validate reports whether f can be asked: an http or https URL, an ID
// and a group the protocol allows.
func (f *FleetLock) Validate() error {
	u, err := url.Parse(f.URL)
	switch {
	case err != nil:
		return fmt.Errorf("FleetLock server: %w", err)
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("FleetLock server %q: want an http:// or https:// URL", f.URL)
	case f.ID == "":
		return fmt.Errorf("FleetLock server %s: no client ID", f.URL)
	case f.Group != "" && !groupName.MatchString(f.Group):
		return fmt.Errorf("FleetLock group %q: want letters, digits, dots and dashes", f.Group)
	}
	return nil
}

// FleetLockError is a failed FleetLock request: the HTTP status and, if
// the server sent the protocol's error object, its kind and value.
type FleetLockError struct {
	Op     string // "pre-reboot" or "steady-state"
	Status int
	Kind   string // e.g. "failed_lock_semaphore_full"
	Value  string // for people
}

func (e *FleetLockError) Error() string {
	if e.Kind == "" {
		return fmt.Sprintf("fleetlock %s: HTTP %d: %s", e.Op, e.Status, e.Value)
	}
	return fmt.Sprintf("fleetlock %s: HTTP %d: %s: %s", e.Op, e.Status, e.Kind, e.Value)
}

// fleetLockFull is the error kind of a full semaphore in the protocol's
// example, which airlock sends.
const fleetLockFull = "failed_lock_semaphore_full"

// maxFleetLockBody bounds what is read of a response.
const maxFleetLockBody = 64 << 10

// Lock tries to take a reboot slot (RecursiveLock): nil if ID holds one
// now, a *FleetLockError if the server said no (all slots taken, among
// others), another error if it could not be asked.
func (f *FleetLock) Lock(ctx context.Context) error { return f.post(ctx, "pre-reboot") }

// Unlock gives ID's slot back if it holds one (UnlockIfHeld).
func (f *FleetLock) Unlock(ctx context.Context) error { return f.post(ctx, "steady-state") }

func (f *FleetLock) post(ctx context.Context, op string) error {
	group := f.Group
	if group == "" {
		group = "default"
	}
	var body struct {
		ClientParams struct {
			ID    string `json:"id"`
			Group string `json:"group"`
		} `json:"client_params"`
	}
	body.ClientParams.ID, body.ClientParams.Group = f.ID, group
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(f.URL, "/")+"/v1/"+op, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("fleetlock %s: %w", op, err)
	}
	req.Header.Set("fleet-lock-protocol", "true")
	req.Header.Set("Content-Type", "application/json")
	c := f.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("fleetlock %s: %w", op, err)
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, maxFleetLockBody))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	e := &FleetLockError{Op: op, Status: resp.StatusCode}
	var obj struct{ Kind, Value string }
	if json.Unmarshal(msg, &obj) == nil && obj.Kind != "" {
		e.Kind, e.Value = obj.Kind, obj.Value
	} else {
		e.Value = strings.TrimSpace(string(msg))
		if err != nil {
			e.Value = err.Error()
		}
	}
	return e
}
