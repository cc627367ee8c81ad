package fleet

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are an agent's Prometheus metrics: its state, the versions it
// runs and should run, whether it holds a place, its rollbacks and when
// its state last changed. Register them with a prometheus.Registerer and
// serve them (abctl agent --metrics ADDR); set Config.Metrics.
type Metrics struct {
	state      *prometheus.GaugeVec
	version    *prometheus.GaugeVec
	holding    prometheus.Gauge
	failures   prometheus.Counter
	transition prometheus.Gauge
}

// NewMetrics returns the agent's metrics, registered with r.
func NewMetrics(r prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "abboot_fleet_state", Help: "1 for the agent's state in the rollout, 0 for the others.",
		}, []string{"state"}),
		version: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "abboot_fleet_version_info", Help: "1, labelled with the version the node runs and the one the fleet should run.",
		}, []string{"running", "desired"}),
		holding: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "abboot_fleet_places_held", Help: "1 while the node holds a reboot place (draining or rebooting).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "abboot_fleet_failures_total", Help: "Rollbacks this agent recorded against a rollout's budget.",
		}),
		transition: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "abboot_fleet_last_transition_timestamp_seconds", Help: "When the agent's state last changed, in Unix seconds.",
		}),
	}
	for _, c := range []prometheus.Collector{m.state, m.version, m.holding, m.failures, m.transition} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

var allStates = []State{StateIdle, StateStaging, StateStaged, StateWaitingWindow, StateWaitingCanary, StateWaitingPlace,
	StateDraining, StateRebooting, StateCommitted, StateRolledBack, StateHalted}

// wrote notes a record written; m may be nil.
func (m *Metrics) wrote(old, rec Record) {
	if m == nil {
		return
	}
	for _, s := range allStates {
		v := 0.0
		if s == rec.State {
			v = 1
		}
		m.state.WithLabelValues(string(s)).Set(v)
	}
	if holding(rec.State) {
		m.holding.Set(1)
	} else {
		m.holding.Set(0)
	}
	if rec.State == StateRolledBack && old.State != StateRolledBack {
		m.failures.Inc()
	}
	if rec.State != old.State {
		m.transition.Set(float64(rec.Updated.UnixNano()) / 1e9)
	}
}

// versions notes the running and desired versions; m may be nil.
func (m *Metrics) versions(running, desired string) {
	if m == nil {
		return
	}
	m.version.Reset()
	m.version.WithLabelValues(running, desired).Set(1)
}
