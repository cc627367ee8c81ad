package fleet

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestBench rolls a version across a simulated fleet on the etcd at
// $ABBOOT_FLEET_BENCH_ETCD and prints one row of bench/fleet.sh's table.
// Without that variable it is skipped: bench/fleet.sh runs it.
//
//	ABBOOT_FLEET_BENCH_NODES    nodes (default 50)
//	ABBOOT_FLEET_BENCH_TIMEOUT  how long the rollout may take (default 5m)
//
// The ideal makespan is ceil(N/M) holds, a hold being the median time from
// a node's pre-reboot hook to the deletion of its place, measured in the
// same run (and printed, so that a hold that load stretched shows): the
// time a place is in use, so that the ideal leaves out exactly what the
// queue costs, the start and every hand-over. A hold and the makespan end
// when this test's watch sees the deletion. Max held is from etcd's
// history (events.maxHolding). Requests and writes are etcd's own counters (grpc_server_msg_received_total,
// etcd_server_proposals_committed_total) over the rollout, per node; CPU
// is etcd's process_cpu_seconds_total and this process's rusage.
func TestBench(t *testing.T) {
	endpoint := os.Getenv("ABBOOT_FLEET_BENCH_ETCD")
	if endpoint == "" {
		t.Skip("ABBOOT_FLEET_BENCH_ETCD is not set; run bench/fleet.sh")
	}
	nodes := envInt(t, "ABBOOT_FLEET_BENCH_NODES", 50)
	timeout := 5 * time.Minute
	if v := os.Getenv("ABBOOT_FLEET_BENCH_TIMEOUT"); v != "" {
		var err error
		if timeout, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	const maxRebooting = 10
	// The agent's defaults but for a lease that outlives a simulated
	// reboot by far less than the default 10 minutes would.
	s := newSimAt(t, endpoint, Config{MaxRebooting: maxRebooting, MaxFailures: 3, Window: always(t), LeaseTTL: time.Minute})
	fleet := make([]*fakeNode, nodes)
	for i := range fleet {
		fleet[i] = s.node(fmt.Sprintf("node-%04d", i), "1.0", false)
	}
	s.waitFor("all nodes idle", 5*time.Minute, func(st FleetStatus) bool { return countStates(st)[StateIdle] == nodes })

	cli := newClient(t, endpoint)
	defer cli.Close()
	p := keys(s.cfg.Prefix)
	m0, ru0 := scrape(t, endpoint), rusage()
	now, err := cli.Get(context.Background(), "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	// Watch the places from here on, noting when each was given back.
	released := make(chan map[string]time.Time, 1)
	wctx, stopWatch := context.WithCancel(context.Background())
	go func() {
		at := map[string]time.Time{}
		for wr := range cli.Watch(wctx, p.places(), clientv3.WithPrefix(), clientv3.WithRev(now.Header.Revision+1)) {
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					at[strings.TrimPrefix(string(ev.Kv.Key), p.places())] = time.Now()
				}
			}
		}
		released <- at
	}()

	start := time.Now()
	s.setDesired("2.0")
	var done int
	for deadline := start.Add(timeout); time.Now().Before(deadline); time.Sleep(time.Second) {
		st, err := Status(context.Background(), cli, s.cfg.Prefix)
		if err != nil {
			t.Fatal(err)
		}
		if done = countStates(st)[StateCommitted]; done == nodes && len(st.Places) == 0 {
			break
		}
	}
	m1, ru1 := scrape(t, endpoint), rusage()
	stopWatch()
	at := <-released

	var end, first time.Time
	var holds []time.Duration
	for _, n := range fleet {
		n.mu.Lock()
		if first.IsZero() || n.preReboot.Before(first) {
			first = n.preReboot
		}
		if r, ok := at[n.name]; ok && !n.preReboot.IsZero() {
			holds = append(holds, r.Sub(n.preReboot))
			if r.After(end) {
				end = r
			}
		}
		n.mu.Unlock()
	}
	most := history(t, cli, s.cfg.Prefix+"/").maxHolding(p)
	req, wr := m1["grpc_server_msg_received_total"]-m0["grpc_server_msg_received_total"],
		m1["etcd_server_proposals_committed_total"]-m0["etcd_server_proposals_committed_total"]
	row := fmt.Sprintf("| %d | %d |", nodes, maxRebooting)
	if done < nodes {
		row += fmt.Sprintf(" %d of %d committed after %v | | | |", done, nodes, timeout)
	} else {
		slices.Sort(holds)
		hold := holds[len(holds)/2]
		ideal := time.Duration(math.Ceil(float64(nodes)/maxRebooting)) * hold
		makespan := end.Sub(start)
		row += fmt.Sprintf(" %.1f s | %.0f ms | %.1f s | %.2f |", makespan.Seconds(), hold.Seconds()*1000, ideal.Seconds(), makespan.Seconds()/ideal.Seconds())
	}
	row += fmt.Sprintf(" %d | %.1f | %.1f | %.1f s | %.1f s |", most, req/float64(nodes), wr/float64(nodes),
		(ru1 - ru0).Seconds(), m1["process_cpu_seconds_total"]-m0["process_cpu_seconds_total"])
	fmt.Println(row + fmt.Sprintf(" %.1f s |", first.Sub(start).Seconds()))
	if most > maxRebooting {
		t.Errorf("%d nodes held a place at once, max %d", most, maxRebooting)
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// scrape sums etcd's metrics by name, over all their labels.
func scrape(t *testing.T, endpoint string) map[string]float64 {
	resp, err := http.Get(endpoint + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		name, _, _ = strings.Cut(name, "{")
		if i := strings.LastIndexByte(line, ' '); i >= 0 {
			rest = line[i+1:]
		}
		if v, err := strconv.ParseFloat(rest, 64); err == nil {
			m[name] += v
		}
	}
	return m
}

// rusage returns the CPU time this process used so far.
func rusage() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
