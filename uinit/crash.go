package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/abboot/abboot/pkg/pstore"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

// crashes is the reboot-reason channel at boot (issue 13): it reads the
// crash records earlier boots left in pstore, logs one crash event per
// crashed boot, removes the records and returns the slot of each crashed
// boot, for bootcheck.Input.Crashed. The records are removed before the
// decision is written: a power cut in between loses a crash, never counts
// one twice (the model's property 9). A record that cannot be removed is
// not counted, since the next boot would read it again. With no records,
// nothing is written: efi_pstore writes NVRAM only when the kernel dies.
func (b *boot) crashes() []slot.Slot {
	if b.pstoreDir == "" {
		return nil
	}
	if b.pstoreReady != nil {
		b.pstoreReady()
	}
	recs, err := pstore.Read(b.pstoreDir)
	if err != nil {
		b.log.Error("crash", err, "what", "read")
	}
	if len(recs) == 0 {
		return nil
	}
	if err := pstore.Remove(b.pstoreDir, recs); err != nil {
		b.log.Error("crash", err, "what", "remove")
		return nil
	}
	var out []slot.Slot
	for _, c := range pstore.Crashes(recs) {
		s := string(c.Slot)
		if s == "" {
			s = "unknown"
		}
		b.log.Log("crash", "slot", s, "reason", c.Reason, "boot", c.Boot, "records", len(c.Records))
		if c.Slot != "" {
			out = append(out, c.Slot)
		}
	}
	return out
}

// crashChanges describes the crash counts a decision changed, as
// "b:1->2", for the select event; "" when none did.
func crashChanges(old, new slotstate.State) string {
	var ch []string
	for _, s := range slot.All {
		if o, n := old.Get(s).Crashes, new.Get(s).Crashes; o != n {
			ch = append(ch, fmt.Sprintf("%s:%d->%d", s, o, n))
		}
	}
	return strings.Join(ch, ",")
}

// bootID is the kernel's random id of this boot, which the start event
// carries so that pstore.Crashes can tell the dumps of one boot.
func bootID() string {
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(id))
}
