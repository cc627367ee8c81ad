package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/u-root/u-root/pkg/kmodule"

	"github.com/abboot/abboot/pkg/event"
)

// modules loads the modules named in a modules-load.d directory, all at
// once: kmodule's Prober loads each dependency once however many modules
// need it, so independent modules load in parallel instead of one after
// another, and the init can go on with a step as soon as the modules that
// step needs are in (Wait, WaitEarly) rather than when all are (WaitAll).
// Modules listed in a file named *-late.conf (the watchdog driver) are
// needed only before the handover, so WaitEarly does not wait for them.
type modules struct {
	start time.Time
	done  map[string]chan struct{}
	late  map[string]bool
	errs  map[string]error // written before done[name] is closed
	took  map[string]time.Duration
	mu    sync.Mutex
}

// loadModules starts loading every module named in dir/*.conf.
func loadModules(dir string) *modules {
	m := &modules{start: time.Now(), done: map[string]chan struct{}{}, errs: map[string]error{}, took: map[string]time.Duration{}}
	names, late, err := moduleNames(dir)
	m.late = late
	if err != nil {
		event.Error("modules", err)
	}
	var p *kmodule.Prober
	if len(names) > 0 {
		if p, err = kmodule.NewProber(kmodule.ProbeOpts{}); err != nil {
			event.Error("modules", fmt.Errorf("reading modules.dep: %w", err))
			names = nil
		}
	}
	for _, n := range names {
		ch := make(chan struct{})
		m.done[n] = ch
		go func() {
			defer close(ch)
			t := time.Now()
			err := probe(p, n)
			m.mu.Lock()
			defer m.mu.Unlock()
			if err != nil {
				m.errs[n] = fmt.Errorf("loading %s: %w", n, err)
			}
			m.took[n] = time.Since(t)
		}()
	}
	return m
}

// Wait blocks until the named modules are loaded or failed; names the
// configuration does not list are not waited for (they may be built in).
func (m *modules) Wait(names ...string) {
	for _, n := range names {
		if ch, ok := m.done[n]; ok {
			<-ch
		}
	}
}

// WaitEarly waits for every module that is not a late one.
func (m *modules) WaitEarly() {
	for n, ch := range m.done {
		if !m.late[n] {
			<-ch
		}
	}
}

// WaitAll waits for every module, logs the modules event and returns the
// wall time module loading took.
func (m *modules) WaitAll() time.Duration {
	for _, ch := range m.done {
		<-ch
	}
	d := time.Since(m.start)
	m.mu.Lock()
	defer m.mu.Unlock()
	// The sum of each probe's own time is roughly what loading the
	// modules one after another would have cost; the bench compares it
	// with d.
	var sum time.Duration
	var errs []error
	for n, t := range m.took {
		sum += t
		errs = append(errs, m.errs[n])
	}
	kv := []any{"count", len(m.done), "modules_ms", d.Milliseconds(), "modules_sum_ms", sum.Milliseconds()}
	if err := errors.Join(errs...); err != nil {
		event.Error("modules", err, kv...)
	} else {
		event.Log("modules", append(kv, "result", "ok")...)
	}
	return d
}

// moduleNames reads the module names from dir/*.conf, skipping comments,
// and says which came from a *-late.conf file.
func moduleNames(dir string) ([]string, map[string]bool, error) {
	late := map[string]bool{}
	files, err := filepath.Glob(filepath.Join(dir, "*.conf"))
	if err != nil {
		return nil, late, err
	}
	var names []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return names, late, err
		}
		s := bufio.NewScanner(fh)
		for s.Scan() {
			l := strings.TrimSpace(s.Text())
			if l != "" && l[0] != '#' && l[0] != ';' {
				names = append(names, l)
				late[l] = strings.HasSuffix(f, "-late.conf")
			}
		}
		fh.Close()
	}
	return names, late, nil
}

// probe loads module n; a panic in the loader is an error, not the end of
// PID 1.
func probe(p *kmodule.Prober, n string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return p.Probe(n, "")
}
