package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"

	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/runstate"
	"github.com/abboot/abboot/pkg/slot"
)

type entryStatus struct {
	Slot  string `json:"slot"`
	Entry string `json:"entry,omitempty"` // Boot#### or empty when missing
	Path  string `json:"path,omitempty"`
	Order int    `json:"boot_order"` // position in BootOrder, -1 when absent
}

type status struct {
	Running string        `json:"running,omitempty"`
	How     string        `json:"how,omitempty"`
	Version string        `json:"version,omitempty"`
	Entries []entryStatus `json:"entries"`
}

func statusCmd(g *globals, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.BoolVar(&g.json, "json", g.json, "JSON output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var st status
	if g.efivars == "" {
		if rs, err := runstate.Read(); err == nil {
			st.Running, st.How, st.Version = rs.Slot, rs.How, rs.Version
		}
	}
	v := efivar.Open(g.efivars)
	entries, err := v.BootEntries()
	if entries == nil {
		return fmt.Errorf("reading boot entries: %w", err)
	}
	order, _ := v.BootOrder()
	for _, s := range slot.All {
		es := entryStatus{Slot: string(s), Order: -1}
		if n, ok := bootentry.Find(entries, s); ok {
			es.Entry = fmt.Sprintf("Boot%04X", n)
			es.Path = entries[n].FilePath.String()
			es.Order = slices.Index(order, n)
		}
		st.Entries = append(st.Entries, es)
	}
	if g.json {
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		return e.Encode(st)
	}
	fmt.Printf("running: %s (learned from %s) version %s\n", or(st.Running, "unknown"), or(st.How, "-"), or(st.Version, "-"))
	for _, e := range st.Entries {
		fmt.Printf("slot %s: entry %s order %d %s\n", e.Slot, or(e.Entry, "missing"), e.Order, e.Path)
	}
	return nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
