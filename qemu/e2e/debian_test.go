package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/abboot/abboot/internal/demodisk"
	"github.com/abboot/abboot/pkg/bootparam"
	ukipkg "github.com/abboot/abboot/pkg/uki"
	"github.com/abboot/abboot/qemu"
)

// The Debian tests boot the systemd-based Debian 12 root of images/debian
// (docs/own-os.md) through abboot's init and dm-verity. Under TCG a
// systemd boot takes minutes, so the limits are wider than the demo's.
const (
	debianBoot      = 6 * time.Minute
	debianVMTimeout = 40 * time.Minute
	debianCompat    = "abboot-debian-x86_64"
)

// debianImages are built once per test binary by images/debian/build.sh
// (its own cache keeps them across runs): variant -> UKI.
var (
	debianOnce sync.Once
	debianUKI  = map[string]string{}
	debianErr  error
)

func debianImages(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("images/debian/build.sh needs root (mmdebstrap --mode=root)")
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Skip("mmdebstrap not installed: apt-get install mmdebstrap")
	}
	debianOnce.Do(func() {
		for _, v := range []string{"v1", "v2", "v3"} {
			out := filepath.Join(work, "debian-"+v+".efi")
			// v3 never commits and waits for the watchdog's reset:
			// 120 s instead of the image's 300 is still several times
			// a boot to boot-complete.target under TCG.
			cmd := exec.Command("./images/debian/build.sh", "-o", out, v)
			cmd.Dir, cmd.Env = repo, append(os.Environ(), "ABBOOT_WATCHDOG=120")
			if b, err := cmd.CombinedOutput(); err != nil {
				debianErr = fmt.Errorf("build.sh %s: %v: %s", v, err, tail(string(b)))
				return
			}
			debianUKI[v] = out
		}
	})
	if debianErr != nil {
		t.Fatal(debianErr)
	}
}

// debianDisk lays out v1 in slot A, an empty slot B big enough for any
// variant, and an empty data partition (/var, formatted by the OS).
func debianDisk(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	base := strings.TrimSuffix(debianUKI["v1"], ".efi")
	img := filepath.Join(dir, "disk.img")
	args := []string{"disk", "-o", img,
		"--esp-file", "EFI/abboot/a.efi=" + debianUKI["v1"], "--esp-file", "EFI/BOOT/BOOTX64.EFI=" + debianUKI["v1"],
		"--verity-slot", strings.Join([]string{"a", base + ".root.img", base + ".verity.img", debianRootHash(t, "v1")}, ":")}
	var biggest int64
	for _, v := range []string{"v1", "v2", "v3"} {
		fi, err := os.Stat(strings.TrimSuffix(debianUKI[v], ".efi") + ".root.img")
		if err != nil {
			t.Fatal(err)
		}
		biggest = max(biggest, fi.Size())
	}
	for _, p := range []struct {
		label, typ string
		size       int64
	}{
		{"abboot-root-b", "root", biggest + 16<<20},
		{"abboot-verity-b", "root-verity", 4 << 20},
	} {
		f := filepath.Join(dir, p.label+".img")
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f, p.size); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--part", p.label+":"+p.typ+":"+f)
	}
	args = append(args, "--data", "256")
	if out, err := run(repo, abimage, args...); err != nil {
		t.Fatalf("abimage %v: %v: %s", args, err, out)
	}
	return img
}

// debianRootHash reads abboot.roothash from a variant's UKI.
func debianRootHash(t *testing.T, v string) string {
	t.Helper()
	img, err := ukipkg.ReadFile(debianUKI[v], ".cmdline")
	if err != nil {
		t.Fatal(err)
	}
	p, err := bootparam.Parse(string(img.Sections[".cmdline"]))
	if err != nil || p.RootHash == "" {
		t.Fatalf("%s has no root hash: %v", v, err)
	}
	return p.RootHash
}

// debianBundles signs a bundle of each variant and puts them on a FAT
// disk as VARIANT.abb.
func debianBundles(t *testing.T, variants ...string) string {
	t.Helper()
	dir := debianBundleFiles(t, variants...)
	img := filepath.Join(t.TempDir(), "bundles.img")
	if out, err := run(repo, "mkfs.vfat", "-C", img, strconv.Itoa(len(variants)*160<<10)); err != nil {
		t.Fatalf("mkfs.vfat: %v: %s", err, out)
	}
	for _, v := range variants {
		if out, err := run(repo, "mcopy", "-i", img, filepath.Join(dir, v+".abb"), "::"+v+".abb"); err != nil {
			t.Fatalf("mcopy: %v: %s", err, out)
		}
	}
	return img
}

// debianBundleFiles signs a bundle of each variant (UKI, root and tree)
// and returns the directory that holds them as VARIANT.abb.
func debianBundleFiles(t *testing.T, variants ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, v := range variants {
		base := strings.TrimSuffix(debianUKI[v], ".efi")
		abb := filepath.Join(dir, v+".abb")
		args := []string{"bundle", "--key", demodisk.Key(), "--compatible", debianCompat,
			"--uki", debianUKI[v], "--root", base + ".root.img", "--verity", base + ".verity.img", "-o", abb}
		if out, err := run(repo, abimage, args...); err != nil {
			t.Fatalf("abimage %v: %v: %s", args, err, out)
		}
	}
	return dir
}

// debianStart powers the machine on with the Debian limits. The SMBIOS
// system UUID gives the read-only root a stable machine ID (systemd
// derives it from a VM's UUID when /etc/machine-id is empty), so that
// journald keeps every boot's journal in one place and journalctl -b -1
// finds the boot before an update.
func debianStart(m *machine) *qemu.VM {
	m.t.Helper()
	return m.boot(debianVMTimeout, "-uuid", "ab600700-0000-4000-8000-00000000d12a")
}

// debianExpect waits for a console line with the Debian limit.
func debianExpect(t *testing.T, vm *qemu.VM, re string) []string {
	t.Helper()
	got, err := vm.Expect(re, debianBoot)
	if err != nil {
		t.Fatalf("waiting for %q: %v", re, err)
	}
	return got
}

// login waits for the root shell the test image's serial getty logs in.
func login(t *testing.T, vm *qemu.VM) {
	t.Helper()
	if _, err := vm.ExpectPrompt(`root@abboot-debian:.*# $`, debianBoot); err != nil {
		t.Fatal(err)
	}
	// No pager, no colours, no terminal width games in the output.
	sh(t, vm, "bind 'set enable-bracketed-paste off'; export SYSTEMD_PAGER= SYSTEMD_COLORS=0 TERM=dumb; stty cols 500")
}

// shRE is the line sh appends after a command's output.
var shRE = regexp.MustCompile(`^e2e-exit=(\d+)$`)

// shTry runs a shell command and returns its output lines and exit status.
func shTry(t *testing.T, vm *qemu.VM, cmd string) ([]string, int) {
	t.Helper()
	before := len(vm.Output())
	// The echo of the typed line holds "e2e-exit=$?", which shRE does
	// not match; only the shell's output does.
	if err := vm.Send(cmd + "; echo e2e-exit=$?\r"); err != nil {
		t.Fatal(err)
	}
	m := debianExpect(t, vm, shRE.String())
	if _, err := vm.ExpectPrompt(`# $`, debianBoot); err != nil {
		t.Fatal(err)
	}
	out := strings.ReplaceAll(vm.Output()[before:], "\r", "")
	var lines []string
	for i, l := range strings.Split(out, "\n") {
		if i == 0 || shRE.MatchString(l) || strings.Contains(l, "e2e-exit=$?") {
			continue
		}
		lines = append(lines, l)
	}
	code, _ := strconv.Atoi(m[1])
	return lines, code
}

// sh runs a shell command and fails the test unless it exits 0.
func sh(t *testing.T, vm *qemu.VM, cmd string) []string {
	t.Helper()
	out, code := shTry(t, vm, cmd)
	if code != 0 {
		t.Fatalf("%s: exit status %d:\n%s", cmd, code, strings.Join(out, "\n"))
	}
	return out
}

// debianStatus is `abctl status --json` in the Debian root.
func debianStatus(t *testing.T, vm *qemu.VM) slotStatus {
	t.Helper()
	return parseStatus(t, strings.Join(sh(t, vm, "abctl status --json"), "\n"))
}

// upOn waits for the Debian root to reach multi-user.target, logs in and
// checks which slot and version run.
func upOn(t *testing.T, vm *qemu.VM, slot, version string) {
	t.Helper()
	debianExpect(t, vm, fmt.Sprintf(`abboot: event=exec slot=%s version=%s `, slot, version))
	login(t, vm)
	// The getty logs in before the boot is finished; is-system-running
	// --wait returns when it is (degraded on v3, hence || true).
	sh(t, vm, "systemctl is-system-running --wait || true")
	sh(t, vm, "systemctl is-active multi-user.target")
	got := sh(t, vm, "abctl status --json | grep -o '\"running\": *\"[ab]\"' | head -1")
	if !strings.Contains(strings.Join(got, ""), `"`+slot+`"`) {
		t.Fatalf("abctl status says running %q, want %s", got, slot)
	}
}

// committedAfterBootComplete checks that abboot-mark-good ran, and only
// after boot-complete.target was reached.
func committedAfterBootComplete(t *testing.T, vm *qemu.VM) {
	t.Helper()
	sh(t, vm, "systemctl is-active abboot-mark-good.service || systemctl status abboot-mark-good.service")
	reached := monotonic(t, vm, "boot-complete.target", "ActiveEnterTimestampMonotonic")
	started := monotonic(t, vm, "abboot-mark-good.service", "ExecMainStartTimestampMonotonic")
	if reached == 0 || started < reached {
		t.Fatalf("abboot-mark-good started at %d µs, boot-complete.target reached at %d µs", started, reached)
	}
}

func monotonic(t *testing.T, vm *qemu.VM, unit, prop string) int64 {
	t.Helper()
	for _, l := range sh(t, vm, "systemctl show -P "+prop+" "+unit) {
		if n, err := strconv.ParseInt(strings.TrimSpace(l), 10, 64); err == nil {
			return n
		}
	}
	t.Fatalf("systemctl show -P %s %s: no number", prop, unit)
	return 0
}

// TestDebianBoot: the Debian root boots under abboot's init through
// dm-verity to multi-user.target, abctl works in it, the init's select and
// verity events are in the journal, and the slot commits only after
// boot-complete.target.
func TestDebianBoot(t *testing.T) {
	debianImages(t)
	m := newMachine(t, debianDisk(t))
	vm := debianStart(m)
	upOn(t, vm, "a", "1")
	for _, ev := range []string{"select", "verity"} {
		// The init wrote them to the kernel log; journald took the
		// identifier from the text.
		if out := sh(t, vm, "journalctl -b -t abboot | grep 'abboot: event="+ev+" '"); len(out) == 0 {
			t.Errorf("no %s event in the journal", ev)
		}
	}
	committedAfterBootComplete(t, vm)
	if st := debianStatus(t, vm); st.Slots[0].Condition != "committed" {
		t.Errorf("slot A after the boot: %+v, want committed", st.Slots[0])
	}
	sh(t, vm, "findmnt -n -o SOURCE,FSTYPE,OPTIONS /var | grep -q 'ext4 *rw'")
	debianPoweroff(t, vm)
}

// debianPoweroff shuts the OS down through systemd and waits for QEMU to
// exit. (A command that stops the machine is sent, not run with sh:
// systemd may stop the shell before it prints its status.)
func debianPoweroff(t *testing.T, vm *qemu.VM) {
	t.Helper()
	if err := vm.Send("systemctl poweroff\r"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(); err != nil {
		t.Fatalf("poweroff: %v\n%s", err, tail(vm.Output()))
	}
}

// TestDebianUpdateRollback is the story of issue 12 on one machine: a
// file in /var survives an update v1 -> v2 by kexec (systemd stops the
// services and unmounts /var first), a rollback to v1, an update again,
// a power cut in the middle of an install, and a v3 whose required health
// check fails: it never commits and the machine is back on v2 by itself.
func TestDebianUpdateRollback(t *testing.T) {
	debianImages(t)
	m := newMachine(t, debianDisk(t), debianBundles(t, "v2", "v3"))
	vm := debianStart(m)
	upOn(t, vm, "a", "1")
	committedAfterBootComplete(t, vm)
	sh(t, vm, "echo kept > /var/lib/e2e-marker && sync")
	mount := "mkdir -p /run/b && mount -o ro /dev/vdb /run/b"
	marker := func() {
		t.Helper()
		if out := sh(t, vm, "cat /var/lib/e2e-marker"); !strings.Contains(strings.Join(out, "\n"), "kept") {
			t.Fatalf("/var/lib/e2e-marker lost: %q", out)
		}
	}

	// Update v1 -> v2 by kexec, through systemd's shutdown.
	sh(t, vm, mount)
	vm.Send("abctl install --reboot=kexec /run/b/v2.abb\r")
	debianExpect(t, vm, `abboot: event=install slot=b version=2 .*result=ok`)
	debianExpect(t, vm, `abboot: event=reboot slot=b action=kexec`)
	debianExpect(t, vm, `Unmounted .*/var`)
	// A verity root is learned by its root hash; the handover on the
	// command line says the try was counted.
	debianExpect(t, vm, `abboot: event=select running=b best=b reason=handover action=continue`)
	upOn(t, vm, "b", "2")
	committedAfterBootComplete(t, vm)
	marker()
	// The v1 boot's journal (kept in /var) shows the services stopping
	// before the kexec. -D reads every machine ID's directory, in case
	// the machine ID was not stable across the boots.
	prev := strings.Join(sh(t, vm, "journalctl -D /var/log/journal -b -1 -o cat | grep -E 'Stopped|Stopping|kexec' | tail -20"), "\n")
	if !strings.Contains(prev, "Stopped") {
		t.Errorf("the v1 boot's journal shows no stopped service:\n%s", prev)
	}

	// Roll back to v1 and come back to v2 (sent, as debianPoweroff).
	vm.Send("abctl rollback --reboot=kexec\r")
	debianExpect(t, vm, `Unmounted .*/var`)
	upOn(t, vm, "a", "1")
	committedAfterBootComplete(t, vm)
	marker()
	sh(t, vm, mount)
	vm.Send("abctl install --reboot=kexec /run/b/v2.abb\r")
	upOn(t, vm, "b", "2")
	committedAfterBootComplete(t, vm)
	marker()

	// A power cut in the middle of installing v3 into A.
	sh(t, vm, mount)
	vm.Send(fmt.Sprintf("abctl install --rate %d /run/b/v3.abb\r", 4<<20))
	if _, err := vm.ExpectPrompt(`\] +[1-6]\d% `, debianBoot); err != nil {
		t.Fatal(err)
	}
	vm.Kill()
	vm = debianStart(m)
	upOn(t, vm, "b", "2")
	marker()

	// v3 fails its required health check: no commit; its one try runs
	// out at the watchdog's reset and the machine is back on v2.
	sh(t, vm, mount)
	vm.Send("abctl install --tries 1 --reboot=kexec /run/b/v3.abb\r")
	upOn(t, vm, "a", "3")
	if _, code := shTry(t, vm, "systemctl is-active boot-complete.target"); code == 0 {
		t.Fatal("boot-complete.target is active on v3")
	}
	if st := debianStatus(t, vm); st.Slots[0].Condition == "committed" {
		t.Fatalf("v3 committed: %+v", st.Slots[0])
	}
	debianExpect(t, vm, `abboot: event=start `)
	upOn(t, vm, "b", "2")
	marker()
	debianPoweroff(t, vm)
}
