package delta

import (
	"fmt"
	"io"
	"os"

	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/slot"
)

// SlotSeeds opens disk read-only and returns the root and verity
// partitions of the running slot and of the target slot as seeds, the
// running one first (it holds the newest blocks the device has; the
// target is written as the install goes). A slot without its partitions
// is left out. Close the returned closer after the install.
func SlotSeeds(disk string, running, target slot.Slot) ([]Seed, io.Closer, error) {
	f, err := os.Open(disk)
	if err != nil {
		return nil, nil, fmt.Errorf("opening disk for delta seeds: %w", err)
	}
	d, err := gpt.Open(disk, false)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	defer d.Close()
	tab, err := d.Read()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	ss := d.SectorSize()
	var seeds []Seed
	for _, s := range []slot.Slot{running, target} {
		root, ok1 := tab.ByName(s.RootLabel())
		tree, ok2 := tab.ByName(s.VerityLabel())
		if !ok1 || !ok2 {
			continue
		}
		seeds = append(seeds, Seed{
			Name:     string(s),
			Data:     io.NewSectionReader(f, root.Start(ss), root.Size(ss)),
			Size:     root.Size(ss),
			Hash:     io.NewSectionReader(f, tree.Start(ss), tree.Size(ss)),
			HashSize: tree.Size(ss),
			Target:   s == target,
		})
	}
	return seeds, f, nil
}
