package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/abboot/abboot/internal/demodisk"
	"github.com/abboot/abboot/qemu"
)

// sbKeys is the directory of the project's test Secure Boot keys (abimage
// sbkeys), made once in mkuimage.sh's cache and reused, so that the
// enrolled variable store stays cached too.
var sbKeys string

// signedImages are built by setup like images, signed by sbKeys' db
// (mkuimage.sh with ABBOOT_SB_KEYS).
var signedImages = []struct{ name, version, cmdline string }{
	{"s1", "1", "abboot.watchdog=30"},
	{"s2", "2", "abboot.watchdog=30"},
}

func buildSigned() error {
	sbKeys = filepath.Join(demodisk.Cache(), "sbkeys-test")
	if _, err := os.Stat(filepath.Join(sbKeys, "PK.auth")); err != nil {
		tmp := sbKeys + ".tmp"
		os.RemoveAll(tmp)
		if out, err := run(repo, abimage, "sbkeys", "--name", "abboot test", "-o", tmp); err != nil {
			return fmt.Errorf("abimage sbkeys: %v: %s", err, out)
		}
		if err := os.Rename(tmp, sbKeys); err != nil {
			return err
		}
	}
	for _, im := range signedImages {
		uki[im.name] = filepath.Join(work, im.name+".efi")
		if out, err := runEnv(repo, []string{"ABBOOT_SB_KEYS=" + sbKeys}, "./mkuimage.sh",
			"-v", im.version, "-c", im.cmdline, "-o", uki[im.name]); err != nil {
			return fmt.Errorf("mkuimage.sh for %s: %v: %s", im.name, err, out)
		}
	}
	// s2 signed by a key set the machines do not trust.
	foreign := filepath.Join(work, "foreign-keys")
	if out, err := run(repo, abimage, "sbkeys", "--name", "foreign", "-o", foreign); err != nil {
		return fmt.Errorf("abimage sbkeys: %v: %s", err, out)
	}
	uki["s2-foreign"] = filepath.Join(work, "s2-foreign.efi")
	if out, err := run(repo, abimage, "sign", "--sb-keys", foreign, "-o", uki["s2-foreign"], uki["s2"]); err != nil {
		return fmt.Errorf("abimage sign: %v: %s", err, out)
	}
	return nil
}

// enrolled is the cached OVMF variable store with the test keys enrolled.
var enrolled struct {
	sync.Mutex
	path string
}

// enrolledVars returns an OVMF variable store with sbKeys enrolled: cached
// in mkuimage.sh's cache under a name keyed by the firmware, the template
// and the keys, and made, when missing, by one boot of the Secure Boot
// firmware in setup mode that runs `abctl secureboot enroll`.
func enrolledVars(t *testing.T) string {
	t.Helper()
	enrolled.Lock()
	defer enrolled.Unlock()
	if enrolled.path != "" {
		return enrolled.path
	}
	h := sha256.New()
	for _, f := range []string{qemu.SecureBootCode, qemu.DefaultVars, "db.auth", "KEK.auth", "PK.auth"} {
		if !filepath.IsAbs(f) {
			f = filepath.Join(sbKeys, f)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	path := filepath.Join(demodisk.Cache(), "ovmf-vars-enrolled-"+hex.EncodeToString(h.Sum(nil))[:16]+".fd")
	if _, err := os.Stat(path); err == nil {
		enrolled.path = path
		return path
	}
	keys := fatDisk(t, map[string]string{
		"db.auth":  filepath.Join(sbKeys, "db.auth"),
		"KEK.auth": filepath.Join(sbKeys, "KEK.auth"),
		"PK.auth":  filepath.Join(sbKeys, "PK.auth"),
	})
	m := machineOf(t, slotDisk(t, "s1", "s1"), keys)
	m.secureBoot = true
	vm := m.start()
	upAs(t, vm, "1", "a")
	if sb := secureBootStatus(t, vm); sb.SecureBoot || !sb.SetupMode {
		t.Fatalf("fresh OVMF store: %+v, want setup mode", sb)
	}
	mountBundles(t, vm)
	command(t, vm, "abctl secureboot enroll /run/b")
	poweroff(t, vm)
	b, err := os.ReadFile(m.vars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	enrolled.path = path
	return path
}

// secureBootMachine is newMachine on OVMF's Secure Boot build with the
// test keys enrolled.
func secureBootMachine(t *testing.T, disks ...string) *machine {
	t.Helper()
	m := newMachine(t, disks...)
	m.secureBoot = true
	b, err := os.ReadFile(enrolledVars(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.vars, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

// sbStatus is the secure_boot object of `abctl status --json`.
type sbStatus struct {
	SecureBoot bool              `json:"secure_boot"`
	SetupMode  bool              `json:"setup_mode"`
	Error      string            `json:"error"`
	Slots      map[string]string `json:"slots"`
}

func secureBootStatus(t *testing.T, vm *qemu.VM) sbStatus {
	t.Helper()
	var st struct {
		SecureBoot *sbStatus `json:"secure_boot"`
	}
	if json.Unmarshal([]byte(statusJSON(t, vm)), &st) != nil || st.SecureBoot == nil {
		t.Fatal("abctl status --json has no secure_boot object")
	}
	return *st.SecureBoot
}

// statusJSON is the JSON object `abctl status --json` prints.
func statusJSON(t *testing.T, vm *qemu.VM) string {
	t.Helper()
	out := strings.Join(command(t, vm, "abctl status --json"), "\n")
	i, j := strings.Index(out, "{"), strings.LastIndex(out, "}")
	if i < 0 || j < i {
		t.Fatalf("abctl status --json:\n%s", out)
	}
	return out[i : j+1]
}

// pcr11 reads PCR 11 (SHA-256) in the guest, through the kernel's sysfs.
func pcr11(t *testing.T, vm *qemu.VM) string {
	t.Helper()
	for _, l := range command(t, vm, "cat /sys/class/tpm/tpm0/pcr-sha256/11") {
		if l = strings.TrimSpace(l); len(l) == 64 {
			return strings.ToLower(l)
		}
	}
	t.Fatal("no PCR 11 value read")
	return ""
}

// predict is `abimage pcr11` of the named UKIs.
func predict(t *testing.T, names ...string) string {
	t.Helper()
	args := []string{"pcr11"}
	for _, n := range names {
		args = append(args, uki[n])
	}
	out, err := run(repo, abimage, args...)
	if err != nil {
		t.Fatalf("abimage pcr11: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestSecureBootUpdate: the test keys enrolled and a TPM attached, signed
// v1 on A boots with Secure Boot on and the kernel locked down; an update
// to signed v2 in B goes by kexec (the kernel checks .linux against db)
// and B commits. PCR 11 after the kexec is what abimage pcr11 predicts for
// the handover from v1, and differs from its value after a firmware boot
// of B, which is the prediction for v2 alone.
func TestSecureBootUpdate(t *testing.T) {
	m := secureBootMachine(t, slotDisk(t, "s1", "s1"), bundleDisk(t, "s2"))
	m.tpm = t.TempDir()
	vm := m.start()
	upAs(t, vm, "1", "a")
	if sb := secureBootStatus(t, vm); !sb.SecureBoot || sb.SetupMode || sb.Slots["a"] != "ok" {
		t.Fatalf("secure boot status on A: %+v, want on, user mode, a ok", sb)
	}
	command(t, vm, "mount -t securityfs securityfs /sys/kernel/security")
	if out := strings.Join(command(t, vm, "cat /sys/kernel/security/lockdown"), "\n"); !strings.Contains(out, "[integrity]") {
		t.Errorf("the kernel is not locked down:\n%s", out)
	}
	updateByKexec(t, vm, "s2")
	if sb := secureBootStatus(t, vm); !sb.SecureBoot || sb.Slots["b"] != "ok" {
		t.Errorf("secure boot status on B: %+v", sb)
	}
	handover, firmware := predict(t, "s1", "s2"), predict(t, "s2")
	if got := pcr11(t, vm); got != handover {
		t.Errorf("PCR 11 after the kexec into B: %s, predicted %s (firmware boot of B: %s)", got, handover, firmware)
	}
	poweroff(t, vm)

	vm = m.start()
	upAs(t, vm, "2", "b")
	if got := pcr11(t, vm); got != firmware || got == handover {
		t.Errorf("PCR 11 after a firmware boot of B: %s, predicted %s (after the kexec: %s)", got, firmware, handover)
	}
	poweroff(t, vm)
}

// tampered writes a copy of UKI name with one byte of section sec changed
// (an image changed on the ESP after it was installed) and returns it.
func tampered(t *testing.T, name, sec string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+sec+".efi")
	if err := demodisk.Tamper(uki[name], out, sec); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSecureBootTampered: B's UKI changed on the ESP after its install
// (one byte of .initrd, and of .cmdline, which the kernel's own kexec
// check does not cover): the init refuses to hand over to it, marks B bad
// and stays on A; asked directly, the firmware refuses it too.
func TestSecureBootTampered(t *testing.T) {
	for _, sec := range []string{".initrd", ".cmdline"} {
		t.Run(sec, func(t *testing.T) {
			m := secureBootMachine(t, disk(t, map[string]string{
				"EFI/abboot/a.efi":     uki["s1"],
				"EFI/abboot/b.efi":     tampered(t, "s2", sec),
				"EFI/BOOT/BOOTX64.EFI": uki["s1"],
			}))
			vm := m.start()
			upAs(t, vm, "1", "a")
			command(t, vm, "abctl set-active b")
			vm.Send("reboot\r")
			expect(t, vm, `abboot: event=verify slot=b action=kexec bytes=\d+ ms=\d+ marked=bad .*result=error err=.*no signature trusted by db.*changed after signing`)
			expect(t, vm, `abboot: event=select running=a best=a .*action=continue write=true`)
			upAs(t, vm, "1", "a")
			if st := status(t, vm); st.Slots[1].Condition != "bad" {
				t.Errorf("B after its UKI was refused: %+v, want bad", st.Slots[1])
			}
			if sec != ".initrd" {
				poweroff(t, vm)
				return
			}
			// The firmware, told to boot B once, refuses it and falls
			// back to BootOrder: A.
			b := entries(command(t, vm, "efibootmgr"))["b"]
			command(t, vm, "efibootmgr -n "+b)
			vm.Send("reboot\r")
			expect(t, vm, `BdsDxe: failed to load Boot`+b+` "abboot B" .*Access Denied`)
			upAs(t, vm, "1", "a")
			poweroff(t, vm)
		})
	}
}

// fails runs a command in the demo OS that must fail and returns its
// output lines.
func fails(t *testing.T, vm *qemu.VM, cmd string) []string {
	t.Helper()
	status, out := runIn(t, vm, cmd)
	if status == "0" {
		t.Fatalf("%s succeeded, want a refusal:\n%s", cmd, strings.Join(out, "\n"))
	}
	return out
}

// TestSecureBootRefusedBundles: with Secure Boot on, a bundle whose UKI is
// unsigned, and one signed by a key not in db, are refused with one line
// before anything is written, from a file and from stdin (spooled to the
// guest's /tmp first): the slot state and B's UKI stay as they were. A
// signed bundle from stdin then installs. (URLs, with and without range
// support, are pkg/install's TestSecureBootSources.)
func TestSecureBootRefusedBundles(t *testing.T) {
	// The demo console has no redirection: gosh runs a script for stdin.
	scripts := map[string]string{}
	for _, b := range []string{"2", "s2-foreign", "s2"} {
		scripts["stdin-"+b+".sh"] = filepath.Join(t.TempDir(), "stdin.sh")
		if err := os.WriteFile(scripts["stdin-"+b+".sh"], []byte("abctl install - < /run/b/"+b+".abb\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := secureBootMachine(t, slotDisk(t, "s1", "s1"), bundleDiskWith(t, scripts, "2", "s2-foreign", "s2"))
	vm := m.start()
	upAs(t, vm, "1", "a")
	mountBundles(t, vm)
	before := statusJSON(t, vm)
	for bundle, why := range map[string]string{"2": "image is not signed", "s2-foreign": `signer "CN=foreign db"`} {
		for _, cmd := range []string{"abctl install /run/b/" + bundle + ".abb", "gosh /run/b/stdin-" + bundle + ".sh"} {
			out := fails(t, vm, cmd)
			var refusals []string
			for _, l := range out {
				if strings.HasPrefix(l, "abctl install: ") {
					refusals = append(refusals, l)
				}
			}
			if len(refusals) != 1 || !strings.Contains(refusals[0], "Secure Boot is on and the bundle's UKI would not boot: ") || !strings.Contains(refusals[0], why) {
				t.Errorf("%s: want one refusal line saying %q:\n%s", cmd, why, strings.Join(out, "\n"))
			}
			// The first write is step 1 (a spool in /tmp is no write to
			// the disk).
			if s := strings.Join(out, "\n"); strings.Contains(s, "step=mark-bad") {
				t.Errorf("%s started writing:\n%s", cmd, s)
			}
		}
	}
	if after := statusJSON(t, vm); after != before {
		t.Errorf("status changed by refused installs:\nbefore %s\nafter %s", before, after)
	}
	out := strings.Join(command(t, vm, "gosh /run/b/stdin-s2.sh"), "\n")
	if !strings.Contains(out, "step=check-uki read=spool") || !strings.Contains(out, "event=install slot=b version=2 ") {
		t.Errorf("signed bundle from stdin:\n%s", out)
	}
	if st := status(t, vm); st.Slots[1].Version != "2" || st.Next != "b" {
		t.Errorf("after the install from stdin: %+v, want version 2 in B, next", st)
	}
	poweroff(t, vm)
}
