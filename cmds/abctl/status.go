package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/health"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
	"github.com/abboot/abboot/pkg/tool"
	"github.com/abboot/abboot/pkg/uki"
)

// slotStatus is one slot in `abctl status --json`; the keys slot,
// version, priority, tries and successful are an interface (docs/design.md).
type slotStatus struct {
	Slot    string `json:"slot"`
	Version string `json:"version"`
	slotstate.Attrs
	Bootable  bool   `json:"bootable"`
	Condition string `json:"condition"` // committed, trial, failed or bad
	// OverCrashLimit: a committed slot that crashed on crash-limit
	// boots in a row (issue 13); it is booted only when no other slot
	// can be.
	OverCrashLimit bool   `json:"over_crash_limit"`
	Running        bool   `json:"running"`
	Entry          string `json:"entry,omitempty"` // Boot#### of its firmware entry
	BootOrder      int    `json:"boot_order"`      // position of that entry in BootOrder, -1 when absent
}

type entryStatus struct {
	Entry       string `json:"entry"`
	Description string `json:"description"`
	Path        string `json:"path"`
	Active      bool   `json:"active"`
}

type status struct {
	Running     string         `json:"running,omitempty"`
	How         string         `json:"how,omitempty"`
	Store       string         `json:"store"`
	CrashLimit  int            `json:"crash_limit"` // abboot.crash-limit of this boot (default for an image); 0: off
	StoreError  string         `json:"store_error,omitempty"`
	Next        string         `json:"next,omitempty"` // the slot the next boot selects
	Slots       []slotStatus   `json:"slots"`
	BootOrder   []string       `json:"boot_order"`
	BootNext    string         `json:"boot_next,omitempty"`
	BootEntries []entryStatus  `json:"boot_entries"`
	EntryErrors string         `json:"entry_errors,omitempty"`
	Health      *health.Report `json:"health,omitempty"` // of the disk, when there is one
	SecureBoot  *sbStatus      `json:"secure_boot"`
}

func statusCmd(g *globals, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.BoolVar(&g.json, "json", g.json, "JSON output")
	s, args, err := g.parse(fs, args)
	if err != nil {
		return err
	}
	st := status{Running: string(s.running), How: s.run.How, Store: s.store.String(), CrashLimit: slotstate.DefaultCrashLimit}
	if s.run.Slot != "" {
		st.CrashLimit = s.run.CrashLimit
	}
	state, err := s.store.Load()
	if err != nil && !errors.Is(err, slotstore.ErrNoState) {
		st.StoreError = err.Error()
	}
	running := s.running
	if running == "" {
		running = slot.A
	}
	if next, _, ok := bootcheck.Preferred(state, running, st.CrashLimit); ok {
		st.Next = string(next)
	}

	entries, err := s.vars.BootEntries()
	if err != nil {
		st.EntryErrors = err.Error()
	}
	order, _ := s.vars.BootOrder()
	for _, n := range order {
		st.BootOrder = append(st.BootOrder, efivar.BootName(n))
	}
	if n, ok, _ := s.vars.BootNext(); ok {
		st.BootNext = efivar.BootName(n)
	}
	for _, n := range slices.Sorted(maps.Keys(entries)) {
		o := entries[n]
		st.BootEntries = append(st.BootEntries, entryStatus{
			Entry: efivar.BootName(n), Description: o.Description,
			Path: o.FilePath.String(), Active: o.Attributes&1 != 0,
		})
	}
	for _, sl := range slot.All {
		a := state.Get(sl)
		ss := slotStatus{Slot: string(sl), Version: s.version(sl), Attrs: a, Bootable: a.Bootable(), Condition: a.Condition(), Running: sl == s.running, BootOrder: -1,
			OverCrashLimit: bootcheck.Crashing(a, st.CrashLimit)}
		if n, ok := bootentry.Find(entries, sl); ok {
			ss.Entry = efivar.BootName(n)
			ss.BootOrder = slices.Index(order, n)
		}
		st.Slots = append(st.Slots, ss)
	}
	if s.disk != "" && g.disk == "" {
		r := health.Check(s.disk)
		st.Health = &r
	}
	st.SecureBoot = s.secureBoot()
	if g.json {
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		return e.Encode(st)
	}
	fmt.Printf("store: %s", st.Store)
	if st.StoreError != "" {
		fmt.Printf(" (unreadable: %s)", st.StoreError)
	}
	fmt.Printf("\nrunning: %s (learned from %s)   next boot: %s\n", or(st.Running, "unknown"), or(st.How, "-"), or(st.Next, "none bootable"))
	fmt.Printf("%-4s %-8s %-10s %-8s %-5s %-10s %-7s %s\n", "SLOT", "VERSION", "CONDITION", "PRIORITY", "TRIES", "SUCCESSFUL", "CRASHES", "ENTRY")
	for _, x := range st.Slots {
		fmt.Printf("%-4s %-8s %-10s %-8d %-5d %-10v %-7d %s\n", x.Slot, or(x.Version, "-"), x.Condition, x.Priority, x.Tries, x.Successful, x.Crashes, or(x.Entry, "missing"))
	}
	for i, x := range st.Slots {
		if !x.OverCrashLimit {
			continue
		}
		// st.Slots follows slot.All: 1-i is the other slot.
		if o := st.Slots[1-i]; !o.Bootable || o.OverCrashLimit {
			fmt.Printf("slot %s crashed on %d boots in a row (crash limit %d), and is still booted: no other slot can boot\n", x.Slot, x.Crashes, st.CrashLimit)
		} else {
			fmt.Printf("slot %s crashed on %d boots in a row (crash limit %d): not preferred while another slot can boot\n", x.Slot, x.Crashes, st.CrashLimit)
		}
	}
	if h := st.Health; h != nil {
		switch {
		case h.Critical:
			fmt.Printf("disk: FAILING: %s\n", h.Reason)
		case h.Supported:
			fmt.Printf("disk: %s, healthy\n", h.Type)
		default:
			fmt.Printf("disk: health unknown (%s)\n", h.Reason)
		}
	}
	st.SecureBoot.print()
	fmt.Printf("BootOrder: %v", st.BootOrder)
	if st.BootNext != "" {
		fmt.Printf("  BootNext: %s", st.BootNext)
	}
	fmt.Println()
	return nil
}

// version is the VERSION_ID in the .osrel of slot sl's UKI, "" when that
// cannot be read.
func (s *system) version(sl slot.Slot) string {
	path, done, err := s.ukiFile(sl)
	if err != nil {
		return ""
	}
	defer done()
	img, err := uki.ReadFile(path, ".osrel")
	if err != nil {
		return ""
	}
	return img.OSRelease()["VERSION_ID"]
}

// extract copies a file out of the disk image's ESP with mcopy.
func (s *system) extract(p string) (string, error) {
	t, err := gpt.ReadFile(s.disk)
	if err != nil {
		return "", err
	}
	esps := t.ByType(gpt.TypeESP)
	if len(esps) == 0 {
		return "", errors.New("no ESP")
	}
	f, err := os.CreateTemp("", "abctl-uki-")
	if err != nil {
		return "", err
	}
	f.Close()
	img := fmt.Sprintf("%s@@%d", s.disk, esps[0].Start(t.SectorSize))
	if _, err := tool.Run("mcopy", "-n", "-o", "-i", img, "::"+p, f.Name()); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
