package slotstore

import (
	"errors"
	"fmt"

	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

// The ChromeOS cgpt attribute bits, which Flatcar's gptprio uses too
// (vboot_reference cgptlib, CGPT_ATTRIBUTE_{PRIORITY,TRIES,SUCCESSFUL}_OFFSET:
// priority 48-51, tries 52-55, successful 56), on each slot's root
// partition. They sit in the type-specific upper 16 attribute bits (UEFI
// 2.10 §5.3.3 Table 5.8), so `cgpt show -P/-T/-S` and `cgpt add -P/-T/-S`
// read and write the same slot state as abboot.
const (
	priorityShift   = 48
	triesShift      = 52
	successfulShift = 56
	nibble          = 0xf
)

// countedBit marks the root partition of the slot whose try a BootNext
// handover counted (slotstate.State.Counted, rule 2). UEFI 2.10 §5.3.3
// Table 5.8 leaves bits 48-63 to the partition type, and bit 61 is free in
// both conventions that share them on abboot's root partitions: ChromeOS
// cgpt (vboot_reference cgptlib_internal.h, later gpt_misc.h) uses 48-57
// and keeps 61-63 reserved, and the Discoverable Partitions Specification
// uses 59 (grow-file-system), 60 (read-only) and 63 (no-auto).
const countedBit = 1 << 61

// crashLowBit and crashHighBit hold a committed slot's crash count
// (slotstate.Attrs.Crashes, 0..3, issue 13): the two bits of 48-63 left
// once cgpt (48-57), the Discoverable Partitions Specification (59, 60,
// 63) and the counted marker (61) have theirs. cgpt keeps them, as it
// keeps every bit it does not own.
const (
	crashLowBit  = 1 << 58
	crashHighBit = 1 << 62
)

// AttrsOf returns the slot attributes the cgpt bits of a root
// partition's attribute bits hold.
func AttrsOf(bits uint64) slotstate.Attrs {
	return slotstate.Attrs{
		Priority:   int(bits >> priorityShift & nibble),
		Tries:      int(bits >> triesShift & nibble),
		Successful: bits>>successfulShift&1 == 1,
		Crashes:    crashes(bits),
	}
}

func crashes(bits uint64) int {
	n := 0
	if bits&crashLowBit != 0 {
		n |= 1
	}
	if bits&crashHighBit != 0 {
		n |= 2
	}
	return n
}

// WithAttrs returns a root partition's attribute bits with the cgpt
// bits set to a and every other bit (the counted marker too) kept; it is
// how an image builder gives a slot its first state. Priority and tries
// are clamped to 0..15, so an overflow cannot spill into the neighbouring
// field.
func WithAttrs(bits uint64, a slotstate.Attrs) uint64 {
	clamp := func(v int) uint64 { return uint64(max(0, min(v, nibble))) }
	bits &^= nibble<<priorityShift | nibble<<triesShift | 1<<successfulShift | crashLowBit | crashHighBit
	bits |= clamp(a.Priority)<<priorityShift | clamp(a.Tries)<<triesShift
	if a.Successful {
		bits |= 1 << successfulShift
	}
	c := max(0, min(a.Crashes, slotstate.MaxCrashes))
	if c&1 != 0 {
		bits |= crashLowBit
	}
	if c&2 != 0 {
		bits |= crashHighBit
	}
	return bits
}

// errNoPartitions says a disk has neither root partition; Open then
// falls back to the variable store.
var errNoPartitions = errors.New("no abboot root partitions")

// GPT keeps the state in the attribute bits of the slots' root partitions,
// the partitions labelled slot.A.RootLabel() and slot.B.RootLabel(): the
// ChromeOS cgpt bits (priority 48-51, tries 52-55, successful 56, see
// WithAttrs), so `cgpt show` and `cgpt add` read and write the same
// state, and bit 61 on the counted slot's partition as the counted
// marker. Every other attribute bit is kept. This package is the only one
// that knows these bits: the installer asks Edits for them.
//
// Save edits both partitions in one gpt.Disk.Edit (Edits), which is
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

// label returns the partition labelled name, ok false when there is
// none; two are an error, since the init would not know which to take.
func label(tab *gpt.Table, name string) (p gpt.Partition, ok bool, err error) {
	for _, q := range tab.Partitions {
		if q.Name != name {
			continue
		}
		if ok {
			return p, false, fmt.Errorf("partitions %d and %d are both labelled %s", p.Number, q.Number, name)
		}
		p, ok = q, true
	}
	return p, ok, nil
}

// Partitions returns slot s's root and verity partitions on tab, the
// partitions labelled s.RootLabel() and s.VerityLabel(); ok is false
// when it has neither. One without the other is an error.
func Partitions(tab *gpt.Table, s slot.Slot) (root, verity gpt.Partition, ok bool, err error) {
	root, hasRoot, err := label(tab, s.RootLabel())
	if err != nil {
		return root, verity, false, err
	}
	verity, hasVerity, err := label(tab, s.VerityLabel())
	switch {
	case err != nil:
		return root, verity, false, err
	case hasRoot != hasVerity:
		return root, verity, false, fmt.Errorf("slot %s has only one of the partitions %s and %s", s, s.RootLabel(), s.VerityLabel())
	}
	return root, verity, hasRoot, nil
}

// roots returns the root partitions of slot.All, in that order.
func roots(tab *gpt.Table) ([]gpt.Partition, error) {
	var parts []gpt.Partition
	for _, s := range slot.All {
		p, ok, err := label(tab, s.RootLabel())
		if err != nil {
			return nil, err
		}
		if ok {
			parts = append(parts, p)
		}
	}
	switch len(parts) {
	case 0:
		return nil, fmt.Errorf("%w (%s, %s)", errNoPartitions, slot.A.RootLabel(), slot.B.RootLabel())
	case 1:
		return nil, fmt.Errorf("only one root partition: %s", parts[0].Name)
	}
	return parts, nil
}

// read returns the root partitions of slot.All on d, in that order.
func (g *GPT) read(d *gpt.Disk) ([]gpt.Partition, error) {
	tab, err := d.Read()
	if err != nil {
		return nil, err
	}
	return roots(tab)
}

// Edits returns the edit of tab that saves st: the attribute bits of
// both slots' root partitions. Save makes it alone; the installer adds the
// new root's partition UUIDs to it, so that both land in one
// gpt.Disk.Edit.
func Edits(tab *gpt.Table, st slotstate.State) (map[int]gpt.PartitionEdit, error) {
	if err := st.Validate(); err != nil {
		return nil, err
	}
	parts, err := roots(tab)
	if err != nil {
		return nil, err
	}
	edits := map[int]gpt.PartitionEdit{}
	for i, s := range slot.All {
		bits := WithAttrs(parts[i].Attributes, st.Get(s)) &^ countedBit
		if st.Counted == s {
			bits |= countedBit
		}
		edits[parts[i].Number] = gpt.PartitionEdit{Attributes: &bits}
	}
	return edits, nil
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
		st = st.With(s, AttrsOf(a))
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
	// Repair does nothing to a healthy disk; Edit refuses an unhealthy
	// one.
	if err := d.Repair(); err != nil {
		return err
	}
	tab, err := d.Read()
	if err != nil {
		return err
	}
	edits, err := Edits(tab, st)
	if err != nil {
		return err
	}
	return d.Edit(edits)
}
