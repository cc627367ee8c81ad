package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/qemu"
)

// commitB sets B active on a machine running committed A and waits for B
// to come up and commit.
func commitB(t *testing.T, vm *qemu.VM, version string) {
	t.Helper()
	command(t, vm, "abctl set-active b")
	vm.Send("reboot\r")
	upAs(t, vm, version, "b")
	committed(t, vm, "abboot: event=commit slot=b version="+version+" wrote=state")
}

// committed fails the test unless the demo OS logged the commit line (it
// comes before the ready line up waits for).
func committed(t *testing.T, vm *qemu.VM, line string) {
	t.Helper()
	if !strings.Contains(vm.Output(), line) {
		t.Fatalf("no %q:\n%s", line, grep(vm.Output(), "event=commit"))
	}
}

// TestCrashLimitVerity: committed B's root gets corrupted blocks that its
// OS reads at every boot. dm-verity panics (abboot.verity's default), the
// kernel leaves a record naming B, and after K crashed boots in a row B's
// init hands over to A, which stays; abctl status says why.
func TestCrashLimitVerity(t *testing.T) {
	disk := verityDisk(t, "r1", "r2", "")
	m, vm := committedOn(t, disk)
	commitB(t, vm, "2")
	poweroff(t, vm)
	corruptRoot(t, disk, slot.B)

	vm = m.start()
	k := slotstate.DefaultCrashLimit
	for i := 0; i < k; i++ {
		expect(t, vm, `abboot: event=start running=b`)
		if i > 0 {
			expect(t, vm, `abboot: event=crash slot=b reason="dm-verity device corrupted"`)
			expect(t, vm, fmt.Sprintf(`abboot: event=select running=b best=b reason=committed crashes=b:%d->%d action=continue write=true`, i-1, i))
		}
		expect(t, vm, `verity: \S+: data block \d+ is corrupted`)
		expect(t, vm, `Kernel panic - not syncing: dm-verity device corrupted`)
	}
	expect(t, vm, `abboot: event=start running=b`)
	expect(t, vm, `abboot: event=crash slot=b reason="dm-verity device corrupted"`)
	expect(t, vm, fmt.Sprintf(`abboot: event=select running=b best=a reason=crash-limit crashes=b:%d->%d action=kexec write=true`, k-1, k))
	expect(t, vm, `abboot: event=start running=a how=roothash`)
	upAs(t, vm, "1", "a")
	st := status(t, vm)
	if b := st.Slots[1]; st.Next != "a" || !b.OverCrashLimit || b.Crashes != k || !b.Successful {
		t.Errorf("after the crash limit: next %s, B %+v; want next a, B committed with %d crashes over the limit", st.Next, b, k)
	}
	if out := strings.Join(command(t, vm, "abctl status"), "\n"); !strings.Contains(out, fmt.Sprintf("slot b crashed on %d boots in a row (crash limit %d): not preferred", k, k)) {
		t.Errorf("abctl status does not say why B is left:\n%s", out)
	}
	if n := strings.Count(vm.Output(), "Kernel panic"); n != k {
		t.Errorf("%d panics, want %d", n, k)
	}
	poweroff(t, vm)
}

// TestCrashOnce: committed B panics once (abboot.test-crash=1), then boots
// cleanly: it stays the slot, and its mark-good clears the count.
func TestCrashOnce(t *testing.T) {
	m, vm := committedA(t, "1", "2-crash1")
	commitB(t, vm, "2")
	poweroff(t, vm)

	vm = m.start()
	expect(t, vm, `abboot: event=crash slot=b what=test-crash crashes=0`)
	expect(t, vm, `Kernel panic - not syncing: sysrq triggered crash`)
	expect(t, vm, `abboot: event=crash slot=b reason="sysrq triggered crash"`)
	expect(t, vm, `abboot: event=select running=b best=b reason=committed crashes=b:0->1 action=continue write=true`)
	upAs(t, vm, "2", "b")
	committed(t, vm, "abboot: event=commit slot=b version=2 wrote=state")
	if st := status(t, vm); st.Next != "b" || st.Slots[1].Crashes != 0 {
		t.Errorf("after one crash and a clean boot: %+v; want next b, no crashes", st)
	}
	poweroff(t, vm)
}

// TestSteadyBootsWriteNothing: rule 7 with the crash channel in place: a
// committed slot booted five times leaves the disk's GPT byte for byte as
// it was, and writes no variable of the OVMF store (which is not byte for
// byte the same: OVMF rewrites its console variables and counter itself).
func TestSteadyBootsWriteNothing(t *testing.T) {
	disk := verityDisk(t, "r1", "r2", "")
	m, vm := committedOn(t, disk)
	poweroff(t, vm)
	vm = m.start() // the first boot through the entry abboot made
	up(t, vm)
	poweroff(t, vm)
	vars, table := snapshot(t, m.vars), gptBytes(t, disk)
	for i := 0; i < 5; i++ {
		vm = m.start()
		expect(t, vm, `abboot: event=select running=a best=a reason=committed action=continue write=false`)
		up(t, vm)
		poweroff(t, vm)
	}
	// OVMF itself rewrites ConIn, ConOut, ErrOut and its monotonic
	// counter (MTC) on every boot: those are the firmware's writes, the
	// only ones allowed.
	if w := slices.DeleteFunc(written(vars, snapshot(t, m.vars)), func(v string) bool {
		return slices.Contains([]string{"ConIn", "ConOut", "ErrOut", "MTC"}, v[:strings.IndexByte(v, '@')])
	}); len(w) > 0 {
		t.Errorf("abboot wrote variables over five steady boots: %v", w)
	}
	if !bytes.Equal(gptBytes(t, disk), table) {
		t.Errorf("the GPT changed over five steady boots")
	}
}

// written names the variables of an OVMF variable store whose records
// differ between two copies of it: a write appends a record (header
// StartId 0x55aa, the authenticated layout of EDK II's
// VariableFormat.h, 60 bytes, then the UTF-16 name) and marks the old
// one deleted.
func written(before, after []byte) []string {
	records := func(b []byte) map[string]string {
		m := map[string]string{}
		for i := 0; i+60 <= len(b); i++ {
			if b[i] != 0xaa || b[i+1] != 0x55 {
				continue
			}
			nameSize := int(binary.LittleEndian.Uint32(b[i+36:]))
			dataSize := int(binary.LittleEndian.Uint32(b[i+40:]))
			if nameSize == 0 || nameSize > 512 || i+60+nameSize+dataSize > len(b) {
				continue
			}
			var name []rune
			for j := 0; j+1 < nameSize-2; j += 2 {
				name = append(name, rune(binary.LittleEndian.Uint16(b[i+60+j:])))
			}
			m[fmt.Sprintf("%s@%#x", string(name), i)] = string(b[i : i+60+nameSize+dataSize])
		}
		return m
	}
	old, new := records(before), records(after)
	var out []string
	for k, v := range new {
		if old[k] != v {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func snapshot(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gptBytes returns both GPT copies: the first and the last 33 sectors of
// 512 bytes, and the protective MBR.
func gptBytes(t *testing.T, disk string) []byte {
	t.Helper()
	b := snapshot(t, disk)
	return append(append([]byte(nil), b[:34*512]...), b[len(b)-33*512:]...)
}
