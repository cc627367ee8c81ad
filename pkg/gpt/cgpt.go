package gpt

// The ChromeOS cgpt attribute bits, which Flatcar's gptprio uses too
// (vboot_reference cgptlib, CGPT_ATTRIBUTE_{PRIORITY,TRIES,SUCCESSFUL}_OFFSET:
// priority 48-51, tries 52-55, successful 56). They sit in the type-specific upper 16 attribute bits (UEFI 2.10
// §5.3.3 Table 5.8), so `cgpt show -P/-T/-S` and `cgpt add -P/-T/-S`
// read and write the same slot state as abboot.
const (
	priorityShift   = 48
	triesShift      = 52
	successfulShift = 56
	nibble          = 0xf
)

// Priority returns the cgpt priority (bits 48-51), 0 to 15; 0 means "do
// not boot".
func Priority(attrs uint64) int { return int(attrs >> priorityShift & nibble) }

// Tries returns the cgpt tries counter (bits 52-55), 0 to 15.
func Tries(attrs uint64) int { return int(attrs >> triesShift & nibble) }

// Successful returns the cgpt successful flag (bit 56).
func Successful(attrs uint64) bool { return attrs>>successfulShift&1 == 1 }

// WithSlotBits returns attrs with the cgpt priority, tries and successful
// bits replaced and every other bit kept. priority and tries are clamped
// to 0..15, so a caller's overflow cannot spill into the neighbouring
// field.
func WithSlotBits(attrs uint64, priority, tries int, successful bool) uint64 {
	clamp := func(v int) uint64 { return uint64(max(0, min(v, nibble))) }
	attrs &^= nibble<<priorityShift | nibble<<triesShift | 1<<successfulShift
	attrs |= clamp(priority)<<priorityShift | clamp(tries)<<triesShift
	if successful {
		attrs |= 1 << successfulShift
	}
	return attrs
}
