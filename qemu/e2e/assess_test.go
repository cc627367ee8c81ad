package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/abboot/abboot/qemu"
)

// slotDisk is a disk with UKI a in slot A (and as the fallback copy) and
// UKI b in slot B.
func slotDisk(t *testing.T, a, b string) string {
	return disk(t, map[string]string{
		"EFI/abboot/a.efi":     uki[a],
		"EFI/abboot/b.efi":     uki[b],
		"EFI/BOOT/BOOTX64.EFI": uki[a],
	})
}

// slotStatus is what the tests read of `abctl status --json`.
type slotStatus struct {
	Next       string `json:"next"`
	CrashLimit int    `json:"crash_limit"`
	Slots      []struct {
		Slot, Version, Condition string
		Priority, Tries, Crashes int
		Successful, Bootable     bool
		OverCrashLimit           bool `json:"over_crash_limit"`
	} `json:"slots"`
}

func status(t *testing.T, vm *qemu.VM) slotStatus {
	t.Helper()
	return parseStatus(t, strings.Join(command(t, vm, "abctl status --json"), "\n"))
}

// parseStatus finds the JSON of `abctl status --json` in a command's
// output.
func parseStatus(t *testing.T, out string) slotStatus {
	t.Helper()
	var st slotStatus
	if i, j := strings.Index(out, "{"), strings.LastIndex(out, "}"); i < 0 || j < i || json.Unmarshal([]byte(out[i:j+1]), &st) != nil {
		t.Fatalf("abctl status --json:\n%s", out)
	}
	return st
}

// committedA boots a fresh machine: slot A comes up and commits.
func committedA(t *testing.T, a, b string) (*machine, *qemu.VM) {
	t.Helper()
	return committedOn(t, slotDisk(t, a, b))
}

func committedOn(t *testing.T, disk string) (*machine, *qemu.VM) {
	t.Helper()
	m := newMachine(t, disk)
	vm := m.start()
	upAs(t, vm, "1", "a")
	return m, vm
}

// trialOfB sets B active on a machine running A and reboots it; the init
// on A must count B's first try and hand over to B by action (kexec or
// firmware, that is BootNext).
func trialOfB(t *testing.T, vm *qemu.VM, action string) {
	t.Helper()
	command(t, vm, "abctl set-active b")
	vm.Send("reboot\r")
	expect(t, vm, `abboot: event=select running=a best=b reason=trial tries=3->2 action=`+action+` write=true`)
	expect(t, vm, `abboot: event=handover slot=b action=`+action)
}

// TestTrialCommit: B pending → the init on A counts a try and kexecs B →
// the demo on B commits → the next cold boot goes straight to B with no
// writes.
func TestTrialCommit(t *testing.T) {
	m, vm := committedA(t, "1", "2")
	trialOfB(t, vm, "kexec")
	expect(t, vm, `abboot: event=start running=b how=handover`)
	expect(t, vm, `abboot: event=select running=b best=b reason=handover action=continue write=false`)
	upAs(t, vm, "2", "b")
	if !strings.Contains(vm.Output(), "abboot: event=commit slot=b version=2 wrote=state,BootOrder,fallback") {
		t.Errorf("B did not commit:\n%s", grep(vm.Output(), "event=commit"))
	}
	poweroff(t, vm)

	vm = m.start()
	expect(t, vm, `abboot: event=start running=b how=bootcurrent`)
	expect(t, vm, `abboot: event=select running=b best=b reason=committed action=continue write=false`)
	up(t, vm)
	out := vm.Output()
	if strings.Contains(out, "event=repair") || !strings.Contains(out, `event=commit slot=b version=2 wrote=""`) {
		t.Errorf("the cold boot of committed B wrote something:\n%s", grep(out, "abboot: "))
	}
	poweroff(t, vm)
}

// failedTrial sets B active with two tries on a machine whose B is broken
// and reboots; the system must come back on A for good, with B marked bad
// and no further try.
func failedTrial(t *testing.T, b string, failure string) {
	failedTrialOn(t, slotDisk(t, "1", b), failure)
}

// failedTrialOn is failedTrial on a given disk whose A is good.
func failedTrialOn(t *testing.T, disk, failure string) {
	m, vm := committedOn(t, disk)
	command(t, vm, "abctl set-active b --tries 2")
	vm.Send("reboot\r")
	for _, tries := range []string{"2->1", "1->0"} {
		expect(t, vm, `abboot: event=select running=a best=b reason=trial tries=`+tries+` action=kexec`)
		expect(t, vm, failure)
	}
	// The boot that passes the failed trial over marks it bad; the next
	// ones write nothing.
	expect(t, vm, `abboot: event=select running=a best=a reason=committed action=continue write=true`)
	upAs(t, vm, "1", "a")
	st := status(t, vm)
	if b := st.Slots[1]; b.Bootable || b.Condition != "bad" || b.Priority != 0 || st.Next != "a" {
		t.Errorf("B after its trial: %+v, next %s; want marked bad (priority 0), next a", b, st.Next)
	}
	poweroff(t, vm)

	vm = m.start()
	expect(t, vm, `abboot: event=select running=a best=a reason=committed action=continue write=false`)
	up(t, vm)
	if strings.Contains(vm.Output(), "action=kexec") {
		t.Errorf("another try of B was made:\n%s", grep(vm.Output(), "abboot: "))
	}
	poweroff(t, vm)
}

// TestPanicBeforeInit: B's kernel dies before any init (and so before it
// could count anything itself); the selector on A counted each try.
func TestPanicBeforeInit(t *testing.T) {
	failedTrial(t, "2-panic", `Kernel panic - not syncing`)
}

// TestHangAfterInit: B's OS hangs; the watchdog B's init armed resets the
// machine.
func TestHangAfterInit(t *testing.T) {
	failedTrial(t, "2-hang", `abboot-demo: hanging on purpose`)
}

// TestUnhealthy: B boots but never passes its health check, so it never
// commits and reboots.
func TestUnhealthy(t *testing.T) {
	failedTrial(t, "2-unhealthy", `abboot-demo: health=fail`)
}

// TestNoKexec: with kexec turned off the handover goes through BootNext,
// OVMF honours it, and B's init does not count the try again.
func TestNoKexec(t *testing.T) {
	_, vm := committedA(t, "1-nokexec", "2")
	trialOfB(t, vm, "firmware")
	expect(t, vm, `BdsDxe: starting Boot\S+ "abboot B"`)
	expect(t, vm, `abboot: event=start running=b how=bootcurrent`)
	expect(t, vm, `abboot: event=select running=b best=b reason=handover action=continue write=true`)
	upAs(t, vm, "2", "b")
	if st := status(t, vm); st.Slots[1].Condition != "committed" {
		t.Errorf("B after its BootNext trial: %+v", st.Slots[1])
	}
	poweroff(t, vm)
}

// TestEntriesWipedAfterCommit: after B is committed the firmware loses
// every abboot entry; the fallback copy is B's, so B still boots, and its
// init puts the entries back with B first.
func TestEntriesWipedAfterCommit(t *testing.T) {
	m, vm := committedA(t, "1", "2")
	trialOfB(t, vm, "kexec")
	upAs(t, vm, "2", "b")
	ents := entries(command(t, vm, "efibootmgr"))
	for _, n := range ents {
		command(t, vm, "efibootmgr -q -B -b "+n)
	}
	poweroff(t, vm)

	vm = m.start()
	expect(t, vm, `abboot: event=start running=b how=fallback`)
	expect(t, vm, `abboot: event=repair var=Boot\S+ what=created slot=b result=ok`)
	expect(t, vm, `abboot: event=repair var=Boot\S+ what=created slot=a result=ok`)
	upAs(t, vm, "2", "b")
	lines := command(t, vm, "efibootmgr")
	if got := entries(lines); !strings.HasPrefix(bootOrder(lines), got["b"]+","+got["a"]) {
		t.Errorf("BootOrder %s, want B's entry then A's (%v)", bootOrder(lines), got)
	}
	poweroff(t, vm)
}

// TestNoBootableSlot: with every slot marked bad the init says why on the
// console and gives a rescue shell instead of looping.
func TestNoBootableSlot(t *testing.T) {
	_, vm := committedA(t, "1", "2")
	command(t, vm, "abctl mark-bad --force a")
	vm.Send("reboot\r")
	expect(t, vm, `abboot: event=select running=a best="" reason=no-bootable-slot action=rescue`)
	expect(t, vm, `abboot: event=rescue reason=no-bootable-slot`)
	expect(t, vm, `abboot: rescue shell`)
	expect(t, vm, `abboot-rescue: ready`)
	vm.Send("abctl status\r")
	expect(t, vm, `^a\s+1\s+bad\s`)
	expect(t, vm, `abboot-rescue: exit cmd=abctl status=0`)
}
