package main

import (
	"bufio"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestAgentFlags: abctl agent's fleet flags reach the agent's
// configuration, and bad values fail before anything connects.
func TestAgentFlags(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		check func(*agent) bool
		err   string // in the error, "" for none
	}{
		{[]string{"--canaries", "2", "--soak", "90s"}, func(a *agent) bool {
			return a.cfg.Canaries == 2 && a.cfg.Soak == 90*time.Second && a.cfg.FleetLock == nil
		}, ""},
		{[]string{"--name", "n1", "--fleetlock", "https://fleetlock.example/base", "--group", "workers"}, func(a *agent) bool {
			f := a.cfg.FleetLock
			return f != nil && f.URL == "https://fleetlock.example/base" && f.ID == "n1" && f.Group == "workers"
		}, ""},
		{[]string{"--metrics", ":9477"}, func(a *agent) bool { return a.metrics == ":9477" }, ""},
		{[]string{}, func(a *agent) bool { return a.metrics == "" && a.cfg.Canaries == 0 && a.cfg.Soak == 10*time.Minute }, ""},
		{[]string{"--canaries", "-1"}, nil, "canaries -1"},
		{[]string{"--canaries", "x"}, nil, `invalid value "x" for flag -canaries`},
		{[]string{"--soak", "10"}, nil, `invalid value "10" for flag -soak`},
		{[]string{"--soak", "-1m"}, nil, "soak -1m0s: want neither negative"},
		{[]string{"--fleetlock", "fleetlock.example"}, nil, `FleetLock server "fleetlock.example": want an http:// or https:// URL`},
		{[]string{"--fleetlock", "ftp://fleetlock.example"}, nil, "want an http:// or https:// URL"},
		{[]string{"--fleetlock", "http://fl", "--group", "a b"}, nil, `FleetLock group "a b"`},
		{[]string{"--metrics", "9477"}, nil, `--metrics "9477": want HOST:PORT or :PORT`},
	} {
		a, err := parseAgent(&globals{}, tc.args)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("abctl agent %q: error %v, want one saying %q", tc.args, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("abctl agent %q: %v", tc.args, err)
		case tc.err == "" && !tc.check(a):
			t.Errorf("abctl agent %q: configuration %+v, metrics %q", tc.args, a.cfg, a.metrics)
		}
	}
}

// TestAgentServesMetrics runs abctl agent --metrics with no etcd to reach:
// the agent keeps trying, and serves its metrics meanwhile.
func TestAgentServesMetrics(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(abctl, "agent", "--name", "n1", "--etcd", "http://127.0.0.1:1", "--metrics", addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("no metrics at %s: %v", addr, err)
			}
			continue
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "abboot_fleet_places_held ") {
				return
			}
		}
		t.Fatalf("%s/metrics has no abboot_fleet_places_held", addr)
	}
}
