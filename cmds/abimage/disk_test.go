package main

import (
	"path/filepath"
	"testing"

	"github.com/abboot/abboot/pkg/gpt"
)

// TestDiskData: --data adds an empty partition last, with the DPS /var
// type, the label the OS mounts and the size asked for.
func TestDiskData(t *testing.T) {
	out := filepath.Join(t.TempDir(), "disk.img")
	if err := diskCmd([]string{"--data", "8", "-o", out}); err != nil {
		t.Fatal(err)
	}
	tab, err := gpt.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := tab.ByName(gpt.DataLabel)
	if !ok {
		t.Fatalf("no partition labelled %s", gpt.DataLabel)
	}
	if p.Type != gpt.TypeVar || p.Size(512) != 8<<20 || p.Number != 2 {
		t.Errorf("data partition %v: want number 2, type %s, 8 MiB", p, gpt.TypeVar)
	}
}
