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
	out := strings.Join(command(t, vm, "abctl status --json"), "\n")
	var st struct {
		SecureBoot *sbStatus `json:"secure_boot"`
	}
	if i, j := strings.Index(out, "{"), strings.LastIndex(out, "}"); i < 0 || j < i || json.Unmarshal([]byte(out[i:j+1]), &st) != nil || st.SecureBoot == nil {
		t.Fatalf("abctl status --json:\n%s", out)
	}
	return *st.SecureBoot
}

// TestSecureBootUpdate: the test keys enrolled, signed v1 on A boots with
// Secure Boot on and the kernel locked down; an update to signed v2 in B
// goes by kexec (the kernel checks .linux against db) and B commits.
func TestSecureBootUpdate(t *testing.T) {
	m := secureBootMachine(t, slotDisk(t, "s1", "s1"), bundleDisk(t, "s2"))
	vm := m.start()
	upAs(t, vm, "1", "a")
	if sb := secureBootStatus(t, vm); !sb.SecureBoot || sb.SetupMode || sb.Slots["a"] != "ok" {
		t.Fatalf("secure boot status on A: %+v, want on, user mode, a ok", sb)
	}
	command(t, vm, "mount -t securityfs securityfs /sys/kernel/security")
	if out := strings.Join(command(t, vm, "cat /sys/kernel/security/lockdown"), "\n"); !strings.Contains(out, "[integrity]") {
		t.Errorf("the kernel is not locked down:\n%s", out)
	}
	mountBundles(t, vm)
	vm.Send("abctl install --reboot=kexec /run/b/s2.abb\r")
	expect(t, vm, `abboot: event=install slot=b version=2 bytes=\d+ .*result=ok`)
	expect(t, vm, `abboot: event=reboot slot=b action=kexec reason=trial`)
	expect(t, vm, `abboot: event=start running=b how=handover`)
	upAs(t, vm, "2", "b")
	if !strings.Contains(vm.Output(), "abboot: event=commit slot=b version=2") {
		t.Fatalf("v2 did not commit")
	}
	if sb := secureBootStatus(t, vm); !sb.SecureBoot || sb.Slots["b"] != "ok" {
		t.Errorf("secure boot status on B: %+v", sb)
	}
	poweroff(t, vm)
}
