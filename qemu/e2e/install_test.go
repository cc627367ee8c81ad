package e2e

import (
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/abboot/abboot/internal/demodisk"
	"github.com/abboot/abboot/qemu"
)

// bundleDisk signs a bundle of each named UKI and puts them on a FAT disk,
// as NAME.abb, for the guest to mount.
func bundleDisk(t *testing.T, names ...string) string {
	t.Helper()
	return bundleDiskWith(t, nil, names...)
}

// bundleDiskWith is bundleDisk with files (name -> host file) on the disk
// too.
func bundleDiskWith(t *testing.T, files map[string]string, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	// Signed with the demo key mkuimage.sh made, which every demo image
	// trusts.
	key := demodisk.Key()
	files = maps.Clone(files)
	if files == nil {
		files = map[string]string{}
	}
	for _, n := range names {
		abb := filepath.Join(dir, n+".abb")
		args := []string{"bundle", "--key", key, "--compatible", "abboot-demo-x86_64", "--uki", uki[n], "-o", abb}
		if out, err := run(repo, abimage, args...); err != nil {
			t.Fatalf("abimage %v: %v: %s", args, err, out)
		}
		files[n+".abb"] = abb
	}
	return fatDisk(t, files)
}

// fatDisk is a FAT file system image holding files (name -> host file) at
// its root, for the guest to mount.
func fatDisk(t *testing.T, files map[string]string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fat.img")
	if out, err := run(repo, "mkfs.vfat", "-C", img, "131072"); err != nil {
		t.Fatalf("mkfs.vfat: %v: %s", err, out)
	}
	for name, src := range files {
		if out, err := run(repo, "mcopy", "-i", img, src, "::"+name); err != nil {
			t.Fatalf("mcopy: %v: %s", err, out)
		}
	}
	return img
}

// mountBundles mounts the bundle disk in the demo OS at /run/b.
func mountBundles(t *testing.T, vm *qemu.VM) {
	t.Helper()
	command(t, vm, "mkdir -p /run/b")
	command(t, vm, "mount -t vfat /dev/vdb /run/b")
}

// updateByKexec installs bundle NAME.abb (version 2) from the bundle
// disk into B on a machine running A, kexecs into it and waits for B to
// come up and commit.
func updateByKexec(t *testing.T, vm *qemu.VM, name string) {
	t.Helper()
	mountBundles(t, vm)
	vm.Send("abctl install --reboot=kexec /run/b/" + name + ".abb\r")
	expect(t, vm, `abboot: event=install slot=b version=2 bytes=\d+ .*result=ok`)
	expect(t, vm, `abboot: event=reboot slot=b action=kexec reason=trial`)
	expect(t, vm, `abboot: event=start running=b how=handover`)
	upAs(t, vm, "2", "b")
	if !strings.Contains(vm.Output(), "abboot: event=commit slot=b version=2") {
		t.Fatalf("v2 did not commit")
	}
}

// TestInstallUpdateRollback is the README demo's story: v1 on A; install
// v2 into B and kexec into it; B commits; install a broken v3 into A,
// which fails its health check until its tries run out, and the system
// rolls back to v2 by itself.
func TestInstallUpdateRollback(t *testing.T) {
	m := newMachine(t, slotDisk(t, "1", "1"), bundleDisk(t, "2", "2-unhealthy"))
	vm := m.start()
	upAs(t, vm, "1", "a")
	updateByKexec(t, vm, "2")

	mountBundles(t, vm)
	vm.Send("abctl install --tries 2 --reboot=kexec /run/b/2-unhealthy.abb\r")
	expect(t, vm, `abboot: event=install slot=a version=2 .*result=ok`)
	expect(t, vm, `abboot-demo: health=fail`)
	expect(t, vm, `abboot: event=select running=b best=a reason=trial tries=1->0 action=kexec`)
	expect(t, vm, `abboot-demo: health=fail`)
	expect(t, vm, `abboot: event=select running=b best=b reason=committed action=continue`)
	upAs(t, vm, "2", "b")
	if a := status(t, vm).Slots[0]; a.Condition != "bad" {
		t.Errorf("slot A after the broken update: %+v, want marked bad", a)
	}
	poweroff(t, vm)
}

// TestInstallPowerCut: the machine loses power in the middle of an
// install; the next boot comes up on the old slot, and a new install
// succeeds.
func TestInstallPowerCut(t *testing.T) {
	m := newMachine(t, slotDisk(t, "1", "1"), bundleDisk(t, "2"))
	vm := m.start()
	up(t, vm)
	mountBundles(t, vm)
	// 1 MiB/s: the 12 MiB UKI takes seconds to write, time to cut it.
	vm.Send(fmt.Sprintf("abctl install --rate %d /run/b/2.abb\r", 1<<20))
	// The console is a terminal: abctl redraws one progress bar line.
	if _, err := vm.ExpectPrompt(`\] +[2-6]\d% `, bootTimeout); err != nil {
		t.Fatal(err)
	}
	vm.Kill()
	if strings.Contains(vm.Output(), "event=install slot=b version=2 bytes") {
		t.Fatal("the install finished before the power cut")
	}

	vm = m.start()
	expect(t, vm, `abboot: event=select running=a best=a reason=committed action=continue`)
	upAs(t, vm, "1", "a")
	if b := status(t, vm).Slots[1]; b.Bootable {
		t.Errorf("the half-written slot B is bootable: %+v", b)
	}
	mountBundles(t, vm)
	vm.Send("abctl install --reboot=kexec /run/b/2.abb\r")
	expect(t, vm, `abboot: event=install slot=b version=2 .*result=ok`)
	upAs(t, vm, "2", "b")
	poweroff(t, vm)
}

// TestReadmeDemo runs README's demo command as it stands and checks that it
// tells the whole story: the update, the kexec, the automatic rollback.
func TestReadmeDemo(t *testing.T) {
	t.Parallel()
	out, err := run(repo, "go", "run", "./qemu/cmd/abdemo", "-out", t.TempDir())
	if err != nil {
		t.Fatalf("the demo failed: %v\n%s", err, tail(string(out)))
	}
	for _, want := range []string{
		"abboot-demo: up version=2 slot=b",
		"event=reboot slot=b action=kexec",
		"event=select running=b best=b reason=committed",
		"timeline:",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, tail(string(out)))
		}
	}
}
