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

// loadModules loads every module named in dir's *.conf files (the
// modules-load.d(5) format) with its dependencies, all at once: kmodule's
// Prober loads each dependency once however many modules need it, so
// independent modules load in parallel instead of one after another.
// It logs the modules event and returns the time it took.
func loadModules(dir string) time.Duration {
	start := time.Now()
	names, err := moduleNames(dir)
	if err != nil {
		event.Log("modules", "result", "error", "err", err)
	}
	if len(names) == 0 {
		return 0
	}
	p, err := kmodule.NewProber(kmodule.ProbeOpts{})
	if err != nil {
		event.Log("modules", "result", "error", "err", fmt.Errorf("reading modules.dep: %w", err))
		return 0
	}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Probe(n, ""); err != nil {
				errs[i] = fmt.Errorf("loading %s: %w", n, err)
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		event.Log("modules", "count", len(names), "modules_ms", d.Milliseconds(), "result", "error", "err", err)
	} else {
		event.Log("modules", "count", len(names), "modules_ms", d.Milliseconds(), "result", "ok")
	}
	return d
}

// moduleNames reads the module names from dir/*.conf, skipping comments.
func moduleNames(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.conf"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return names, err
		}
		s := bufio.NewScanner(fh)
		for s.Scan() {
			l := strings.TrimSpace(s.Text())
			if l != "" && l[0] != '#' && l[0] != ';' {
				names = append(names, l)
			}
		}
		fh.Close()
	}
	return names, nil
}
