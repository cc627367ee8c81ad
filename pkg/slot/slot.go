// Package slot names abboot's two slots and the places each one lives: its
// UKI on the ESP, its firmware boot entry and its partition labels (see
// docs/design.md, Disk layout). It holds no state and does no I/O.
package slot

import (
	"fmt"
	"strings"
)

// Slot is "a" or "b".
type Slot string

// The two slots.
const (
	A Slot = "a"
	B Slot = "b"
)

// All lists the slots in their canonical order.
var All = []Slot{A, B}

// Parse accepts "a", "b", "A" or "B".
func Parse(s string) (Slot, error) {
	switch strings.ToLower(s) {
	case "a":
		return A, nil
	case "b":
		return B, nil
	}
	return "", fmt.Errorf("slot %q: want a or b", s)
}

// Other returns the other slot.
func (s Slot) Other() Slot {
	if s == A {
		return B
	}
	return A
}

// Upper is the slot's letter in upper case, as in "abboot A".
func (s Slot) Upper() string { return strings.ToUpper(string(s)) }

// UKIPath is the slot's UKI relative to the ESP root, with forward slashes.
func (s Slot) UKIPath() string { return "EFI/abboot/" + string(s) + ".efi" }

// EFIPath is UKIPath as a UEFI file path node holds it (UEFI 2.10 §10.3.5.4).
func (s Slot) EFIPath() string { return `\` + strings.ReplaceAll(s.UKIPath(), "/", `\`) }

// EntryName is the description of the slot's Boot#### entry.
func (s Slot) EntryName() string { return "abboot " + s.Upper() }

// RootLabel and VerityLabel are the GPT partition names of the slot's root
// and verity partitions.
func (s Slot) RootLabel() string   { return "abboot-root-" + string(s) }
func (s Slot) VerityLabel() string { return "abboot-verity-" + string(s) }

// FallbackPath is the removable-media path firmware boots when it has no
// usable entry (UEFI 2.10 §3.5.1.1); it holds a copy of the committed UKI.
const FallbackPath = "EFI/BOOT/BOOTX64.EFI"

// FromEFIPath maps a UEFI file path to the slot whose UKI it names. FAT is
// case-insensitive, so the comparison is too; either separator is accepted.
func FromEFIPath(p string) (Slot, bool) {
	p = strings.TrimPrefix(strings.ReplaceAll(p, `\`, "/"), "/")
	for _, s := range All {
		if strings.EqualFold(p, s.UKIPath()) {
			return s, true
		}
	}
	return "", false
}

// IsFallbackPath reports whether a UEFI file path names the fallback copy.
func IsFallbackPath(p string) bool {
	p = strings.TrimPrefix(strings.ReplaceAll(p, `\`, "/"), "/")
	return strings.EqualFold(p, FallbackPath)
}
