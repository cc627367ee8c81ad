package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/delta"
	"github.com/abboot/abboot/pkg/esp"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/fetch"
	"github.com/abboot/abboot/pkg/health"
	"github.com/abboot/abboot/pkg/install"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
)

// installCmd installs a signed bundle into the inactive slot (rule 6):
// the signature, the compatible string, the version and the sizes are
// checked before a byte is written; the slot is taken out of the running
// (priority 0) first; root, verity and then the UKI are written while
// the bundle streams in, hashed in the same pass; what landed is checked;
// only then does the slot get a priority above the running one and its
// tries.
//
// From an HTTP(S) URL, on a disk with root partitions, the root is
// installed by delta (pkg/delta) unless --no-delta: the blocks the running
// or the target slot already has are copied from there, each checked
// against the new tree before it is written, and only the others are
// fetched, by range; blocks the target slot holds in place already are
// not written; the new UKI's kernel and initrd are taken from the slots'
// UKIs on the ESP when theirs match. A server without range support gets
// a full download. The events and the progress say what was fetched and
// what was reused.
//
// With Secure Boot on, the bundle's UKI must verify against db and dbx
// before anything is written (bundleUKICheck), whatever the source: a
// file or a URL is read ahead by range; stdin, or a server without range
// support, is spooled whole into --spool-dir first (not the ESP, with
// room for the bundle), or refused.
func installCmd(g *globals, args []string) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	how := fs.String("reboot", "none", "after installing: none, kexec, firmware or any")
	tries := fs.Int("tries", slotstate.DefaultTries, "tries the new slot gets")
	allowDowngrade := fs.Bool("allow-downgrade", false, "install an older version than the running one")
	force := fs.Bool("force", false, "install even to a disk whose SMART health is critical")
	keys := fs.String("keys", "/etc/abboot/keys.pub", "public keys to trust")
	compatFile := fs.String("compatible", "/etc/abboot/compatible", "file holding the compatible string bundles must carry")
	rate := fs.Int64("rate", 0, "read the bundle at most this many `bytes/s` (0: no limit), to leave the disk and network to the running system")
	noDelta := fs.Bool("no-delta", false, "from a URL, fetch the whole bundle instead of only the blocks the slots do not have")
	spoolDir := fs.String("spool-dir", os.TempDir(), "with Secure Boot on, where a bundle that only streams (stdin, a server without range support) is kept until its UKI is checked: not the ESP")
	args, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(args) != 1 || !validReboot(*how) {
		return errors.New("usage: abctl install [--reboot=none|kexec|firmware|any] [--tries N] [--allow-downgrade] [--force] [--no-delta] BUNDLE|URL|-")
	}
	if *tries < 1 || *tries > slotstate.Max {
		return fmt.Errorf("--tries %d: want 1 to %d", *tries, slotstate.Max)
	}
	s, err := g.open()
	if err != nil {
		return err
	}
	if s.running == "" || s.run.ESPDir == "" {
		return errors.New("install works on a system abboot booted, with its ESP mounted")
	}
	keyring, err := bundle.LoadKeys(*keys)
	if err != nil {
		return err
	}
	compat, err := os.ReadFile(*compatFile)
	if err != nil {
		return fmt.Errorf("reading the compatible string: %w", err)
	}
	if s.disk != "" {
		if r := health.Check(s.disk); r.Critical && !*force {
			return fmt.Errorf("disk %s is failing (%s): not installing; --force to install anyway", s.disk, r.Reason)
		} else if r.Critical || !r.Supported {
			event.Log("health", "disk", s.disk, "critical", r.Critical, "reason", r.Reason)
		}
	}
	t := install.Target{Slot: s.running.Other(), Running: s.running, Store: s.store, ESPDir: s.run.ESPDir}
	if _, ok := s.store.(*slotstore.GPT); ok {
		t.Disk = s.disk
	}
	sizes, err := install.SlotSizes(t)
	if err != nil {
		return err
	}
	checkUKI, err := bundleUKICheck(s.vars)
	if err != nil {
		return err
	}
	var src io.ReadCloser
	var ds *delta.Source
	var ukis openFiles
	defer ukis.Close()
	if isURL(args[0]) && t.Disk != "" && !*noDelta {
		ukis = slotUKIs(t)
		ds, err = delta.Open(context.Background(), args[0], delta.Options{Log: event.Log, UKIs: ukis.readers()})
		src = ds
	} else {
		src, err = fetch.Open(context.Background(), args[0], fetch.Options{})
	}
	if err != nil {
		return err
	}
	defer src.Close()
	var in io.Reader = src
	if *rate > 0 {
		in = &limited{r: src, rate: *rate, start: time.Now()}
	}
	r, err := bundle.NewReader(in, keyring, bundle.Policy(strings.TrimSpace(string(compat)), s.run.Version,
		bundle.AllowDowngrade(*allowDowngrade), bundle.SlotSizes(sizes)))
	if err != nil {
		return err
	}
	p := newProgress()
	if ds != nil {
		done, err := planDelta(ds, r, t)
		if err != nil {
			return err
		}
		defer done()
		p.stats = ds.Stats
	}
	o := install.Options{Tries: *tries, Progress: p.update, Log: event.Log, CheckUKI: checkUKI, SpoolDir: *spoolDir}
	if ra, ok := src.(io.ReaderAt); ok {
		o.Bundle = ra // a file, a download or a delta.Source
	}
	if ds != nil {
		o.InPlace = ds.InPlace
	}
	start := time.Now()
	var res install.Result
	err = esp.WithWritable(t.ESPDir, func() (err error) {
		// The target's UKI is replaced: open, its old file would keep
		// the ESP from going back to read-only (EBUSY).
		defer ukis.Close()
		res, err = install.Install(r, t, o)
		return err
	})
	p.done()
	if err != nil {
		event.Error("install", err, "slot", t.Slot, "version", r.Manifest.Version)
		return err
	}
	kv := []any{"slot", t.Slot, "version", r.Manifest.Version, "bytes", res.Bytes,
		"elapsed_ms", time.Since(start).Milliseconds(), "reconnects", fetch.Reconnects(src)}
	if ds != nil {
		st := ds.Stats()
		kv = append(kv, "mode", st.Mode, "fetched_bytes", st.Fetched, "reused_bytes", st.Reused, "in_place_bytes", st.InPlace, "requests", st.Requests)
	}
	event.Log("install", append(kv, "result", "ok")...)
	if *how == "none" {
		return nil
	}
	return s.reboot(*how, "")
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// planDelta plans a delta install into t, seeded from the running and the
// target slot, and returns what to call once the install is done (the
// seeds are read while it runs). Slots that cannot be read are only a
// lost optimisation.
func planDelta(ds *delta.Source, r *bundle.Reader, t install.Target) (done func(), err error) {
	seeds, c, err := delta.SlotSeeds(t.Disk, t.Running, t.Slot)
	if err != nil {
		event.Error("delta", err, "step", "seeds")
		return func() {}, ds.Plan(r, nil)
	}
	if err := ds.Plan(r, seeds); err != nil {
		c.Close()
		return nil, err
	}
	return func() { c.Close() }, nil
}

// openFiles are files open for reading.
type openFiles []*os.File

// slotUKIs opens the UKIs of the running and the target slot on the ESP,
// for a delta install to take the new UKI's sections from; a missing one
// is left out.
func slotUKIs(t install.Target) openFiles {
	var fs openFiles
	for _, s := range []slot.Slot{t.Running, t.Slot} {
		if f, err := os.Open(filepath.Join(t.ESPDir, s.UKIPath())); err == nil {
			fs = append(fs, f)
		}
	}
	return fs
}

func (fs openFiles) readers() []io.ReaderAt {
	var rs []io.ReaderAt
	for _, f := range fs {
		rs = append(rs, f)
	}
	return rs
}

// Close closes the files; it may be called again.
func (fs openFiles) Close() error {
	for _, f := range fs {
		f.Close()
	}
	return nil
}

// limited reads at most rate bytes per second on average.
type limited struct {
	r     io.Reader
	rate  int64
	start time.Time
	n     int64
}

func (l *limited) Read(p []byte) (int, error) {
	p = p[:min(len(p), int(max(l.rate/10, 1)))]
	n, err := l.r.Read(p)
	l.n += int64(n)
	if ahead := time.Duration(l.n*int64(time.Second)/l.rate) - time.Since(l.start); ahead > 0 {
		time.Sleep(ahead)
	}
	return n, err
}

// progress shows an install's progress: a bar redrawn in place on a
// terminal, a plain line every tenth otherwise (logs, serial consoles).
type progress struct {
	tty   bool
	start time.Time
	last  int64 // tenths printed, for plain lines
	open  bool  // a bar is drawn and its line not yet ended
	// stats, for a delta install, says what was fetched and reused.
	stats func() delta.Stats
}

func newProgress() *progress {
	return &progress{tty: term.IsTerminal(int(os.Stderr.Fd())), start: time.Now(), last: -1}
}

func (p *progress) update(done, total int64) {
	if total <= 0 {
		return
	}
	rate := float64(done) / (1 << 20) / max(time.Since(p.start).Seconds(), 0.001)
	if p.tty {
		n := int(40 * done / total)
		fmt.Fprintf(os.Stderr, "\r[%s%s] %3d%% %6.1f MiB/s%s", strings.Repeat("#", n), strings.Repeat(" ", 40-n), 100*done/total, rate, p.delta())
		p.open = true
		if done == total {
			// End the bar's line before the next event line.
			p.done()
		}
		return
	}
	if tenth := 10 * done / total; tenth > p.last {
		p.last = tenth
		fmt.Fprintf(os.Stderr, "abctl: install %d%% (%d of %d bytes, %.1f MiB/s%s)\n", 10*tenth, done, total, rate, p.delta())
	}
}

// delta says what a delta install fetched and reused so far.
func (p *progress) delta() string {
	if p.stats == nil {
		return ""
	}
	st := p.stats()
	return fmt.Sprintf(", fetched %.1f MiB in %d requests, reused %.1f MiB (%.1f in place)", float64(st.Fetched)/(1<<20), st.Requests, float64(st.Reused)/(1<<20), float64(st.InPlace)/(1<<20))
}

func (p *progress) done() {
	if p.open {
		fmt.Fprintln(os.Stderr)
		p.open = false
	}
}
