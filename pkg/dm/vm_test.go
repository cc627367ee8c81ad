package dm

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Device-mapper tests need a kernel with dm-verity, which a build machine
// or container may lack. TestInVM runs them in a QEMU guest instead: the
// kernel is $ABBOOT_TEST_KERNEL, from an unpacked Debian linux-image
// package (mkuimage.sh leaves one in its cache, under kernel/PKG/root/boot), and the
// initramfs holds this test binary as /init and the modules it loads.
const kernelEnv = "ABBOOT_TEST_KERNEL"

// vmModules are loaded by vmInit in this order, dependencies first.
var vmModules = []string{"reed_solomon", "dm-mod", "dm-bufio", "dm-verity", "loop"}

// vmResult is the line vmInit prints with the exit code of the tests.
const vmResult = "abboot-dm-test-exit="

// vmInit runs the device-mapper tests as the guest's PID 1 and powers off.
func vmInit(m *testing.M) {
	for _, mnt := range []struct{ fs, dir string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}, {"tmpfs", "/tmp"}} {
		os.MkdirAll(mnt.dir, 0o755)
		if err := unix.Mount(mnt.fs, mnt.dir, mnt.fs, 0, ""); err != nil {
			fmt.Printf("mounting %s: %v\n", mnt.dir, err)
		}
	}
	for _, name := range vmModules {
		if err := loadModule("/modules/" + name + ".ko"); err != nil {
			fmt.Printf("loading %s: %v\n", name, err)
		}
	}
	os.Args = []string{os.Args[0], "-test.v", "-test.run=^(TestVerityDevice|TestCreateRefusesBadInput)$"}
	code := m.Run()
	fmt.Printf("%s%d\n", vmResult, code)
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	os.Exit(code) // PID 1 exiting panics the kernel, which QEMU's -no-reboot ends too
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

func TestInVM(t *testing.T) {
	kernel := os.Getenv(kernelEnv)
	if kernel == "" {
		t.Skipf("set %s=/path/to/root/boot/vmlinuz-VERSION (an unpacked Debian linux-image) to run the device-mapper tests in QEMU", kernelEnv)
	}
	for _, p := range [][2]string{{"qemu-system-x86_64", "qemu-system-x86"}, {"cpio", "cpio"}} {
		if _, err := exec.LookPath(p[0]); err != nil {
			t.Fatalf("%s not found: apt-get install %s", p[0], p[1])
		}
	}
	// The modules of vmlinuz-VERSION are in ../lib/modules/VERSION.
	kver := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	modDir := filepath.Join(filepath.Dir(kernel), "..", "lib", "modules", kver)

	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "modules"), 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if e, err := elf.Open(self); err != nil {
		t.Fatal(err)
	} else {
		for _, p := range e.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatalf("%s is dynamically linked; build the test with CGO_ENABLED=0", self)
			}
		}
		e.Close()
	}
	copyFile(t, self, filepath.Join(root, "init"), 0o755)
	for _, m := range vmModules {
		out, err := exec.Command("modprobe", "-d", filepath.Join(modDir, "../../.."), "-S", kver, "--show-depends", m).Output()
		if err != nil {
			t.Fatalf("finding module %s for %s in %s: %v", m, kver, modDir, err)
		}
		// The last insmod line is the module itself.
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		fields := strings.Fields(lines[len(lines)-1])
		if len(fields) < 2 || fields[0] != "insmod" {
			t.Fatalf("modprobe --show-depends %s: %q", m, out)
		}
		copyFile(t, fields[1], filepath.Join(root, "modules", m+".ko"), 0o644)
	}
	initrd := filepath.Join(dir, "initrd.cpio")
	cmd := exec.Command("sh", "-c", "find . | cpio -o -H newc --quiet > "+initrd)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v: %s", err, out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	q := exec.CommandContext(ctx, "qemu-system-x86_64", "-m", "512", "-nographic", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet")
	out, err := q.CombinedOutput()
	code := ""
	for s := bufio.NewScanner(strings.NewReader(string(out))); s.Scan(); {
		if v, ok := strings.CutPrefix(strings.TrimSpace(s.Text()), vmResult); ok {
			code = v
		}
	}
	if code != "0" || !strings.Contains(string(out), "--- PASS: TestVerityDevice") {
		t.Errorf("tests in the VM failed (qemu: %v, exit %q):\n%s", err, code, out)
	} else {
		t.Logf("VM output:\n%s", out)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}
