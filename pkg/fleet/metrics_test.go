package fleet

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetrics rolls one node to 2.0 and reads its metrics as Prometheus
// would gather them.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := newSim(t, Config{MaxRebooting: 1, MaxFailures: 1, Window: always(t), LeaseTTL: 3 * time.Second, Poll: 100 * time.Millisecond})
	cfg := s.cfg
	cfg.Metrics = m
	s.startWith(&fakeNode{s: s, name: "a", version: "1.0"}, cfg)
	s.waitFor("a idle", 10*time.Second, func(st FleetStatus) bool { return len(st.Nodes) == 1 })
	s.setDesired("2.0")
	s.waitFor("a committed", 10*time.Second, func(st FleetStatus) bool {
		return countStates(st)[StateCommitted] == 1 && len(st.Places) == 0
	})
	want := map[string]float64{
		"abboot_fleet_state,state=committed":                1,
		"abboot_fleet_state,state=rebooting":                0,
		"abboot_fleet_version_info,desired=2.0,running=2.0": 1,
		"abboot_fleet_places_held":                          0,
		"abboot_fleet_failures_total":                       0,
	}
	// The agent notes the versions on its step after the release: wait
	// for the metrics themselves.
	var got map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got = gather(t, reg)
		if matches(got, want) || time.Now().After(deadline) {
			break
		}
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", name, g, ok, v)
		}
	}
	if got["abboot_fleet_last_transition_timestamp_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last transition at %v, want within the last minute", got["abboot_fleet_last_transition_timestamp_seconds"])
	}
}

// gather returns reg's metrics by name and labels ("name,label=value,...").
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range mt.GetLabel() {
				name += "," + l.GetName() + "=" + l.GetValue()
			}
			got[name] = mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
		}
	}
	return got
}

func matches(got, want map[string]float64) bool {
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			return false
		}
	}
	return true
}
