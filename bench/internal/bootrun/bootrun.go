// Package bootrun holds what the boot benches (bench/boot, bench/osboot)
// share: their command line and scratch directory, reading the numbers of
// abboot's events off a VM's console, the steady-state loop, and medians
// of a key over the samples (stats.Median). It does not start VMs or
// build disks.
package bootrun

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/abboot/abboot/bench/internal/stats"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/qemu"
)

// Config is what a boot bench's command line sets.
type Config struct {
	N    int    // steady-state boots to measure (-n)
	CPUs int    // virtual CPUs (-cpus)
	Log  string // file the serial console is appended to (-log)
}

// Main parses the flags every boot bench takes (-n, default n; -cpus;
// -log), runs run with a scratch directory it removes afterwards, and
// exits non-zero with name and the error when run fails.
func Main(name string, n int, run func(c Config, dir string) error) {
	var c Config
	flag.IntVar(&c.N, "n", n, "steady-state boots to measure")
	flag.IntVar(&c.CPUs, "cpus", 2, "virtual CPUs")
	flag.StringVar(&c.Log, "log", "", "append the serial console to this file")
	flag.Parse()
	err := func() error {
		dir, err := os.MkdirTemp("", "abboot-"+name+"-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		return run(c, dir)
	}()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Sample is one boot's numbers by key (the events' keys, such as
// elapsed_ms, and the bench's own).
type Sample map[string]float64

// Events waits for each named event in turn on vm's console and adds the
// numeric values of its keys to s.
func (s Sample) Events(vm *qemu.VM, timeout time.Duration, names ...string) error {
	for _, ev := range names {
		m, err := vm.Expect(`abboot: event=`+ev+` .*`, timeout)
		if err != nil {
			return err
		}
		kv, _ := event.Parse(m[0])
		for k, v := range kv {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				s[k] = f
			}
		}
	}
	return nil
}

// Median is the median of key over the samples.
func Median(samples []Sample, key string) float64 {
	v := make([]float64, 0, len(samples))
	for _, s := range samples {
		v = append(v, s[key])
	}
	return stats.Median(v)
}

// SteadyState makes a new OVMF variable store in dir, boots n+1 times
// with it and returns the samples of the last n: the first boot of a new
// disk creates the firmware entries (and, for an OS with a data
// partition, formats it), which is not the steady state.
func SteadyState(n int, dir string, boot func(vars string) (Sample, error)) ([]Sample, error) {
	vars := filepath.Join(dir, "vars.fd")
	if err := qemu.NewVars(vars); err != nil {
		return nil, err
	}
	var samples []Sample
	for i := 0; i <= n; i++ {
		s, err := boot(vars)
		if err != nil {
			return nil, fmt.Errorf("boot %d: %w", i+1, err)
		}
		if i > 0 {
			samples = append(samples, s)
		}
	}
	return samples, nil
}
