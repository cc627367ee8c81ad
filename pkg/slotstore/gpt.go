package slotstore

import (
	"errors"
	"fmt"

	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

// countedBit marks the root partition of the slot whose try a BootNext
// handover counted (slotstate.State.Counted, rule 2). UEFI 2.10 §5.3.3
// Table 5.8 leaves bits 48-63 to the partition type, and bit 61 is free in
// both conventions that share them on abboot's root partitions: ChromeOS
// cgpt (vboot_reference cgptlib_internal.h, later gpt_misc.h) uses 48-57
// and keeps 61-63 reserved, and the Discoverable Partitions Specification
// uses 59 (grow-file-system), 60 (read-only) and 63 (no-auto).
const countedBit = 1 << 61

// errNoPartitions says a disk has neither root partition; Open then
// falls back to the variable store.
var errNoPartitions = errors.New("no abboot root partitions")

// GPT keeps the state in the attribute bits of the slots' root partitions,
// the partitions labelled slot.A.RootLabel() and slot.B.RootLabel(): the
// ChromeOS cgpt bits (priority 48-51, tries 52-55, successful 56, see
// gpt.WithSlotBits), so `cgpt show` and `cgpt add` read and write the
// same state, and bit 61 on the counted slot's partition as the counted
// marker. Every other attribute bit is kept.
//
// Save edits both partitions in one gpt.Disk.SetAttributesOf, which is
// atomic across a power cut. Load works on a disk whose GPT needs repair
// (one copy broken or stale), reading the copy gpt.Read trusts; Save first
// repairs such a disk (gpt.Disk.Repair, itself crash-safe) and then edits
// it, so the first Save after a cut also heals the table.
type GPT struct {
	name string
	open func(writable bool) (*gpt.Disk, error)
}

// NewGPT returns the GPT store of the disk or image at path. It fails,
// with an error that Open recognises, when the disk has neither root
// partition.
func NewGPT(path string) (*GPT, error) {
	return newGPT(path, func(w bool) (*gpt.Disk, error) { return gpt.Open(path, w) })
}

// NewGPTFile returns the GPT store of f, size bytes long, named name in
// messages; it is how a test cuts writes. The sector size is detected as
// gpt.OpenFile does.
func NewGPTFile(f gpt.File, name string, size int64) (*GPT, error) {
	return newGPT(name, func(w bool) (*gpt.Disk, error) { return gpt.OpenFile(f, name, size, 0, w) })
}

func newGPT(name string, open func(bool) (*gpt.Disk, error)) (*GPT, error) {
	g := &GPT{name: name, open: open}
	d, err := open(false)
	if err != nil {
		return nil, fmt.Errorf("opening slot state store %s: %w", g, err)
	}
	defer d.Close()
	if _, err := g.read(d); err != nil {
		return nil, fmt.Errorf("opening slot state store %s: %w", g, err)
	}
	return g, nil
}

func (g *GPT) String() string { return "gpt:" + g.name }

// read returns the root partitions of slot.All, in that order.
func (g *GPT) read(d *gpt.Disk) ([]gpt.Partition, error) {
	tab, err := d.Read()
	if err != nil {
		return nil, err
	}
	var parts []gpt.Partition
	for _, s := range slot.All {
		var found []gpt.Partition
		for _, p := range tab.Partitions {
			if p.Name == s.RootLabel() {
				found = append(found, p)
			}
		}
		if len(found) > 1 {
			return nil, fmt.Errorf("partitions %d and %d are both labelled %s", found[0].Number, found[1].Number, s.RootLabel())
		}
		parts = append(parts, found...)
	}
	switch len(parts) {
	case 0:
		return nil, fmt.Errorf("%w (%s, %s)", errNoPartitions, slot.A.RootLabel(), slot.B.RootLabel())
	case 1:
		return nil, fmt.Errorf("only one root partition: %s", parts[0].Name)
	}
	return parts, nil
}

// Load reads the state from the root partitions' attribute bits.
func (g *GPT) Load() (slotstate.State, error) {
	st, err := g.load()
	if err != nil {
		return slotstate.State{}, fmt.Errorf("loading slot state from %s: %w", g, err)
	}
	return st, nil
}

func (g *GPT) load() (slotstate.State, error) {
	var st slotstate.State
	d, err := g.open(false)
	if err != nil {
		return st, err
	}
	defer d.Close()
	parts, err := g.read(d)
	if err != nil {
		return st, err
	}
	for i, s := range slot.All {
		a := parts[i].Attributes
		st = st.With(s, slotstate.Attrs{Priority: gpt.Priority(a), Tries: gpt.Tries(a), Successful: gpt.Successful(a)})
		if a&countedBit == 0 {
			continue
		}
		if st.Counted != "" {
			return slotstate.State{}, fmt.Errorf("%w: counted marker (bit 61) on both root partitions", ErrCorrupt)
		}
		st.Counted = s
	}
	return st, nil
}

// Save writes st to the root partitions' attribute bits, repairing the
// GPT first if one copy is broken or stale. It writes nothing when the
// bits already hold st and the GPT is healthy.
func (g *GPT) Save(st slotstate.State) error {
	if err := g.save(st); err != nil {
		return fmt.Errorf("saving slot state to %s: %w", g, err)
	}
	return nil
}

func (g *GPT) save(st slotstate.State) error {
	if err := st.Validate(); err != nil {
		return err
	}
	d, err := g.open(true)
	if err != nil {
		return err
	}
	defer d.Close()
	// Repair does nothing to a healthy disk; SetAttributesOf refuses
	// an unhealthy one.
	if err := d.Repair(); err != nil {
		return err
	}
	parts, err := g.read(d)
	if err != nil {
		return err
	}
	edit := map[int]uint64{}
	for i, s := range slot.All {
		a := st.Get(s)
		bits := gpt.WithSlotBits(parts[i].Attributes, a.Priority, a.Tries, a.Successful) &^ countedBit
		if st.Counted == s {
			bits |= countedBit
		}
		edit[parts[i].Number] = bits
	}
	return d.SetAttributesOf(edit)
}
