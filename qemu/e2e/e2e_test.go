// Package e2e boots abboot's UKIs in QEMU through OVMF and checks what the
// serial console shows. Each test is one boot chain on its own disk and
// OVMF variable store; tests run in parallel, one VM per host core.
//
// TestMain builds the UKIs once with mkuimage.sh (cached in its cache,
// ~/.cache/abboot) and the
// abimage tool. Serial logs are kept in $ABBOOT_E2E_LOGS when set.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/qemu"
)

var (
	repo    string // repository root
	work    string // built artifacts shared by the tests
	abimage string
	uki     = map[string]string{} // version -> UKI
)

// boot limits under TCG: OVMF alone takes several seconds.
const (
	bootTimeout = 120 * time.Second
	vmTimeout   = 6 * time.Minute
)

func TestMain(m *testing.M) {
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(work)
	os.Exit(code)
}

func setup() error {
	var err error
	if repo, err = filepath.Abs("../.."); err != nil {
		return err
	}
	if work, err = os.MkdirTemp("", "abboot-e2e-"); err != nil {
		return err
	}
	abimage = filepath.Join(work, "abimage")
	if out, err := run(repo, "go", "build", "-o", abimage, "./cmds/abimage"); err != nil {
		return fmt.Errorf("building abimage: %v: %s", err, out)
	}
	for _, im := range images {
		uki[im.name] = filepath.Join(work, im.name+".efi")
		args := []string{"-v", im.version, "-c", im.cmdline, "-o", uki[im.name]}
		if im.root {
			args = append(args, "-r")
		}
		if out, err := run(repo, "./mkuimage.sh", args...); err != nil {
			return fmt.Errorf("mkuimage.sh for %s: %v: %s", im.name, err, out)
		}
	}
	return buildSigned()
}

// images are the UKIs the tests boot. Every one arms the watchdog before
// it hands over; the demo OS closes it when it commits.
var images = []struct {
	name, version, cmdline string
	root                   bool // the OS on a verity root (mkuimage.sh -r)
}{
	{"1", "1", "abboot.watchdog=30", false},
	{"2", "2", "abboot.watchdog=30", false},
	// A kernel that dies before any init runs: no root to fall back to
	// once the initramfs init is not found.
	{"2-panic", "2", "panic=1 rdinit=/nonexistent", false},
	// An OS that hangs after abboot's init armed the watchdog.
	{"2-hang", "2", "abboot.watchdog=10 abboot-demo.health=hang", false},
	// An OS that boots but never passes its health check.
	{"2-unhealthy", "2", "abboot.watchdog=30 abboot-demo.health=fail", false},
	// A selector that must hand over through BootNext.
	{"1-nokexec", "1", "abboot.watchdog=30 abboot.kexec=0", false},
	// A committed slot whose kernel panics once (the init's test hook).
	{"2-crash1", "2", "abboot.watchdog=30 abboot.test-crash=1", false},
	// The OS on dm-verity roots.
	{"r1", "1", "abboot.watchdog=30", true},
	{"r2", "2", "abboot.watchdog=30", true},
}

func run(dir, name string, args ...string) ([]byte, error) {
	return runEnv(dir, nil, name, args...)
}

// runEnv is run with variables added to the environment.
func runEnv(dir string, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

// disk builds a GPT disk whose ESP holds files (ESP path -> host file).
func disk(t *testing.T, files map[string]string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	args := []string{"disk", "-o", img}
	for dst, src := range files {
		args = append(args, "--esp-file", dst+"="+src)
	}
	if out, err := run(repo, abimage, args...); err != nil {
		t.Fatalf("abimage %v: %v: %s", args, err, out)
	}
	return img
}

// abDisk is the standard demo disk: v1 in slot A (and as the fallback
// copy), v2 in slot B.
func abDisk(t *testing.T) string {
	return disk(t, map[string]string{
		"EFI/abboot/a.efi":     uki["1"],
		"EFI/abboot/b.efi":     uki["2"],
		"EFI/BOOT/BOOTX64.EFI": uki["1"],
	})
}

// machine is one test's VM state: its disks and its variable store,
// which persists from boot to boot like a real machine's NVRAM.
type machine struct {
	t     *testing.T
	disks []string
	vars  string
	log   string
	// secureBoot runs OVMF's Secure Boot build; tpm, if set, is the
	// directory of a swtpm TPM (qemu.Options).
	secureBoot bool
	tpm        string
	// forwards, if any, give the machine a restricted NIC
	// (qemu.Options.Forwards).
	forwards []qemu.Forward
}

func newMachine(t *testing.T, disks ...string) *machine {
	t.Helper()
	t.Parallel()
	return machineOf(t, disks...)
}

// machineOf is newMachine for a test that is parallel already.
func machineOf(t *testing.T, disks ...string) *machine {
	t.Helper()
	dir := t.TempDir()
	m := &machine{t: t, disks: disks, vars: filepath.Join(dir, "vars.fd"), log: filepath.Join(dir, "serial.log")}
	if d := os.Getenv("ABBOOT_E2E_LOGS"); d != "" {
		os.MkdirAll(d, 0o755)
		m.log = filepath.Join(d, t.Name()+".log")
		os.MkdirAll(filepath.Dir(m.log), 0o755) // a subtest's name has a "/"
		os.Remove(m.log)
	}
	if err := qemu.NewVars(m.vars); err != nil {
		t.Fatal(err)
	}
	return m
}

// start powers the machine on.
func (m *machine) start() *qemu.VM {
	m.t.Helper()
	return m.boot(vmTimeout)
}

// boot powers the machine on for at most timeout, with extra qemu
// arguments.
func (m *machine) boot(timeout time.Duration, extra ...string) *qemu.VM {
	m.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m.t.Cleanup(cancel)
	// ABBOOT_E2E_CPUS gives the machines more than qemu's default one
	// vCPU, ABBOOT_E2E_TPM_BANKS their TPM other PCR banks than swtpm's
	// four, for benches that compare (bench/verify.sh).
	cpus, _ := strconv.Atoi(os.Getenv("ABBOOT_E2E_CPUS"))
	vm, err := qemu.Start(ctx, qemu.Options{
		CPUs:       cpus,
		TPMBanks:   os.Getenv("ABBOOT_E2E_TPM_BANKS"),
		Disks:      m.disks,
		VarsFile:   m.vars,
		Watchdog:   true,
		Log:        m.log,
		Timeout:    timeout,
		Extra:      extra,
		SecureBoot: m.secureBoot,
		TPMDir:     m.tpm,
		Forwards:   m.forwards,
	})
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(vm.Kill)
	return vm
}

// expect waits for a console line and fails the test without it.
func expect(t *testing.T, vm *qemu.VM, re string) []string {
	t.Helper()
	got, err := vm.Expect(re, bootTimeout)
	if err != nil {
		t.Fatalf("waiting for %q: %v", re, err)
	}
	return got
}

// up waits for the demo OS's up and ready lines and returns the version
// and slot it reports.
func up(t *testing.T, vm *qemu.VM) (version, slot string) {
	t.Helper()
	m := expect(t, vm, `abboot-demo: up version=(\S*) slot=(\S*)`)
	expect(t, vm, `abboot-demo: health=ok`)
	expect(t, vm, `abboot-demo: ready`)
	return m[1], m[2]
}

// upAs waits for the demo OS and fails the test unless it reports version
// and slot.
func upAs(t *testing.T, vm *qemu.VM, version, slot string) {
	t.Helper()
	if v, s := up(t, vm); v != version || s != slot {
		t.Fatalf("the demo came up as version %s slot %s, want %s %s", v, s, version, slot)
	}
}

// command runs a command in the demo OS and returns its output lines.
func command(t *testing.T, vm *qemu.VM, cmd string) []string {
	t.Helper()
	status, out := runIn(t, vm, cmd)
	if status != "0" {
		t.Fatalf("%s: exit status %s:\n%s", cmd, status, strings.Join(out, "\n"))
	}
	return out
}

// runIn runs a command in the demo OS and returns its exit status and
// output lines.
func runIn(t *testing.T, vm *qemu.VM, cmd string) (status string, lines []string) {
	t.Helper()
	if err := vm.Send(cmd + "\r"); err != nil {
		t.Fatal(err)
	}
	before := len(vm.Output())
	m := expect(t, vm, `abboot-demo: exit cmd=\S+ status=(-?\d+)`)
	out := vm.Output()[before:]
	expect(t, vm, `abboot-demo: ready`)
	return m[1], strings.Split(strings.ReplaceAll(out, "\r", ""), "\n")
}

// poweroff shuts the demo OS down and waits for QEMU to exit.
func poweroff(t *testing.T, vm *qemu.VM) {
	t.Helper()
	if err := vm.Send("poweroff\r"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(); err != nil {
		t.Fatalf("poweroff: %v\n%s", err, tail(vm.Output()))
	}
}

func tail(s string) string {
	l := strings.Split(s, "\n")
	return strings.Join(l[max(0, len(l)-30):], "\n")
}

// entryRE matches an efibootmgr line for an abboot entry.
var entryRE = regexp.MustCompile(`^Boot([0-9A-F]{4})\*? abboot ([AB])`)

// entries returns the abboot entries efibootmgr lists: slot -> Boot####.
func entries(lines []string) map[string]string {
	got := map[string]string{}
	for _, l := range lines {
		if m := entryRE.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			got[strings.ToLower(m[2])] = m[1]
		}
	}
	return got
}

// TestFirstBoot: a fresh disk and fresh variables boot through the
// fallback copy; the init creates both entries and puts them first in
// BootOrder; the next boot comes through "abboot A" and writes nothing.
func TestFirstBoot(t *testing.T) {
	m := newMachine(t, abDisk(t))
	vm := m.start()
	expect(t, vm, `abboot: event=start running=a how=fallback`)
	created := map[string]bool{}
	for range 3 { // two entries and one BootOrder change
		r := expect(t, vm, `abboot: event=repair var=(\S+) what=.* slot=([ab]) result=ok`)
		created[r[2]] = true
	}
	if !created["a"] || !created["b"] {
		t.Fatalf("repair events cover slots %v, want a and b", created)
	}
	upAs(t, vm, "1", "a")
	lines := command(t, vm, "efibootmgr -v")
	ents := entries(lines)
	if ents["a"] == "" || ents["b"] == "" {
		t.Fatalf("efibootmgr lists abboot entries %v, want A and B:\n%s", ents, strings.Join(lines, "\n"))
	}
	// efibootmgr decodes our entries to the ESP's partition GUID and the
	// slot's file.
	uuid := espUUID(t, m.disks[0])
	for _, sl := range []string{"a", "b"} {
		want := fmt.Sprintf(`HD(1,GPT,%s,0x800,`, uuid)
		file := fmt.Sprintf(`/File(\EFI\abboot\%s.efi)`, sl)
		if l := grep(strings.Join(lines, "\n"), "abboot "+strings.ToUpper(sl)); !strings.Contains(l, want) || !strings.Contains(l, file) {
			t.Errorf("efibootmgr -v for slot %s: %q, want %s...%s", sl, l, want, file)
		}
	}
	if order := bootOrder(lines); !strings.HasPrefix(order, ents["a"]+","+ents["b"]) {
		t.Errorf("BootOrder %s, want %s,%s first", order, ents["a"], ents["b"])
	}
	poweroff(t, vm)

	vm = m.start()
	got := expect(t, vm, `abboot: event=start running=(\S+) how=(\S+) boot_current=Boot(\S+)`)
	if got[1] != "a" || got[2] != "bootcurrent" || got[3] != ents["a"] {
		t.Errorf("second boot: running=%s how=%s boot_current=%s, want a bootcurrent %s", got[1], got[2], got[3], ents["a"])
	}
	up(t, vm)
	if strings.Contains(vm.Output(), "event=repair") {
		t.Errorf("steady-state boot repaired something:\n%s", grep(vm.Output(), "event=repair"))
	}
	poweroff(t, vm)
}

// TestRepairLostEntries: an entry efibootmgr makes decodes in abctl; then
// the firmware loses abboot's entries; the system still boots (through the
// fallback copy) and the init puts them back.
func TestRepairLostEntries(t *testing.T) {
	m := newMachine(t, abDisk(t))
	vm := m.start()
	up(t, vm)
	command(t, vm, `efibootmgr -q -c -d /dev/vda -p 1 -L probe -l \EFI\abboot\b.efi`)
	var st struct {
		BootEntries []struct{ Entry, Description, Path string } `json:"boot_entries"`
	}
	out := strings.Join(command(t, vm, "abctl status --json"), "\n")
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):strings.LastIndex(out, "}")+1]), &st); err != nil {
		t.Fatalf("abctl status --json: %v\n%s", err, out)
	}
	probe := ""
	for _, e := range st.BootEntries {
		if e.Description == "probe" {
			probe = e.Entry
			if want := fmt.Sprintf(`HD(1,GPT,%s,0x800,`, espUUID(t, m.disks[0])); !strings.Contains(e.Path, want) || !strings.HasSuffix(e.Path, `/File(\EFI\abboot\b.efi)`) {
				t.Errorf("efibootmgr's entry decodes as %q", e.Path)
			}
		}
	}
	if probe == "" {
		t.Fatalf("abctl does not list the entry efibootmgr made:\n%s", out)
	}
	command(t, vm, "efibootmgr -q -B -b "+strings.TrimPrefix(probe, "Boot"))
	ents := entries(command(t, vm, "efibootmgr"))
	for _, s := range []string{"a", "b"} {
		if ents[s] == "" {
			t.Fatalf("no entry for slot %s after the first boot: %v", s, ents)
		}
		command(t, vm, "efibootmgr -q -B -b "+ents[s])
	}
	if left := entries(command(t, vm, "efibootmgr")); len(left) != 0 {
		t.Fatalf("entries left after deleting them: %v", left)
	}
	poweroff(t, vm)

	vm = m.start()
	expect(t, vm, `abboot: event=start running=a`)
	for range 2 {
		expect(t, vm, `abboot: event=repair var=Boot\S+ what=created slot=[ab] result=ok`)
	}
	up(t, vm)
	if got := entries(command(t, vm, "efibootmgr")); got["a"] == "" || got["b"] == "" {
		t.Errorf("entries after repair: %v, want A and B", got)
	}
	poweroff(t, vm)
}

// TestMissingSlotFile: slot B's UKI is missing; the init says so in one
// line, makes no entry for it, and boots A.
func TestMissingSlotFile(t *testing.T) {
	m := newMachine(t, disk(t, map[string]string{
		"EFI/abboot/a.efi":     uki["1"],
		"EFI/BOOT/BOOTX64.EFI": uki["1"],
	}))
	vm := m.start()
	expect(t, vm, `abboot: event=repair slot=b result=error err=.*EFI/abboot/b.efi`)
	upAs(t, vm, "1", "a")
	if got := entries(command(t, vm, "efibootmgr")); got["a"] == "" || got["b"] != "" {
		t.Errorf("entries %v, want A only", got)
	}
	poweroff(t, vm)
}

// TestNoESP: the UKI boots from a disk without a GPT ESP (a bare FAT
// file system, which firmware accepts as removable media); the init says
// it found no ESP and boots on as slot A.
func TestNoESP(t *testing.T) {
	img := filepath.Join(t.TempDir(), "fat.img")
	for _, c := range [][]string{
		{"mkfs.vfat", "-C", "-F", "32", img, "65536"},
		{"mmd", "-i", img, "::EFI", "::EFI/BOOT"},
		{"mcopy", "-i", img, uki["1"], "::EFI/BOOT/BOOTX64.EFI"},
	} {
		if out, err := run(repo, c[0], c[1:]...); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	m := newMachine(t, img)
	vm := m.start()
	expect(t, vm, `abboot: event=esp result=error err=.*no EFI system partition`)
	expect(t, vm, `abboot: event=start running=a how=default`)
	upAs(t, vm, "1", "a")
	poweroff(t, vm)
}

// espUUID reads the ESP's partition GUID from a disk image.
func espUUID(t *testing.T, disk string) string {
	t.Helper()
	tab, err := gpt.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	esps := tab.ByType(gpt.TypeESP)
	if len(esps) != 1 {
		t.Fatalf("%s has %d ESPs", disk, len(esps))
	}
	return esps[0].UUID.String()
}

func bootOrder(lines []string) string {
	for _, l := range lines {
		if o, ok := strings.CutPrefix(strings.TrimSpace(l), "BootOrder: "); ok {
			return o
		}
	}
	return ""
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestUKISections: a UKI that mkuimage.sh built carries the four sections
// the stub needs, as binutils sees them, and fits the 24 MiB target.
func TestUKISections(t *testing.T) {
	out, err := run(repo, "objdump", "-h", uki["1"])
	if err != nil {
		t.Fatalf("objdump -h: %v: %s", err, out)
	}
	for _, s := range []string{".linux", ".initrd", ".cmdline", ".osrel"} {
		if !strings.Contains(string(out), " "+s+" ") {
			t.Errorf("objdump -h does not list %s:\n%s", s, out)
		}
	}
	if fi, err := os.Stat(uki["1"]); err != nil || fi.Size() >= 24<<20 {
		t.Errorf("UKI size %v, %v: want under 24 MiB", fi.Size(), err)
	}
}
