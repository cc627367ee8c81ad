package dm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/abboot/abboot/pkg/verity"
	"github.com/u-root/u-root/pkg/mount/loop"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// As PID 1 the test binary is the init of TestInVM's virtual
	// machine (vm_test.go).
	if os.Getpid() == 1 {
		vmInit(m)
	}
	os.Exit(m.Run())
}

// requireVerity skips unless the test runs as root on a kernel with
// device-mapper, dm-verity and loop devices, loading the modules if
// modprobe can.
func requireVerity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop and device-mapper devices")
	}
	for _, m := range []string{"dm_verity", "loop"} {
		exec.Command("modprobe", m).Run() // built in, or loaded by vmInit
	}
	// dm_verity has module parameters, so sysfs lists it also when it is
	// built in.
	for _, p := range []string{"/sys/module/dm_verity", "/dev/loop-control"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("kernel lacks dm-verity or loop devices (%v); ABBOOT_TEST_KERNEL runs this test in a VM", err)
		}
	}
}

// attach attaches file to a free loop device until the test ends.
func attach(t *testing.T, file string) string {
	for range 10 {
		dev, err := loop.FindDevice()
		if err != nil {
			t.Fatalf("finding a free loop device: %v", err)
		}
		err = loop.SetFile(dev, file)
		if errors.Is(err, unix.EBUSY) { // taken by someone else since
			continue
		}
		if err != nil {
			t.Fatalf("attaching %s to %s: %v", file, dev, err)
		}
		t.Cleanup(func() {
			if err := loop.ClearFile(dev); err != nil {
				t.Errorf("detaching %s: %v", dev, err)
			}
		})
		return dev
	}
	t.Fatalf("no free loop device for %s", file)
	return ""
}

// create creates v for a test and removes it when the test ends. It
// refuses the corruption modes that reboot or panic the machine.
func create(t *testing.T, v Verity) string {
	if v.OnCorruption == RestartOnCorruption || v.OnCorruption == PanicOnCorruption {
		t.Fatalf("%s in a test would take the machine down", v.OnCorruption)
	}
	dev, err := Create(v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Remove(v.Name); err != nil && !errors.Is(err, unix.ENXIO) {
			t.Error(err)
		}
	})
	return dev
}

func devNumber(t *testing.T, path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
}

func statusField(t *testing.T, name string) string {
	s, err := Status(name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(s)[0]
}

func TestVerityDevice(t *testing.T) {
	requireVerity(t)
	const blockSize = 4096
	dir := t.TempDir()
	dataPath, data := randomFile(t, dir, 4<<20)
	hashPath := dir + "/hash"
	hf, err := os.Create(hashPath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := verity.NewParams()
	if err != nil {
		t.Fatal(err)
	}
	root, err := verity.Format(bytes.NewReader(data), int64(len(data)), hf, p)
	hf.Close()
	if err != nil {
		t.Fatal(err)
	}
	// A copy of the data with block 5 changed.
	const bad = 5
	badData := bytes.Clone(data)
	badData[bad*blockSize+17] ^= 1
	badPath := dir + "/bad"
	if err := os.WriteFile(badPath, badData, 0o600); err != nil {
		t.Fatal(err)
	}
	dataDev, badDev, hashDev := attach(t, dataPath), attach(t, badPath), attach(t, hashPath)
	prefix := fmt.Sprintf("abboot-test-%d-", os.Getpid())

	verityOn := func(t *testing.T, name, dataDev string, root []byte, onCorruption string) Verity {
		v, err := VerityFromSuperblock(dataDev, hashDev, root)
		if err != nil {
			t.Fatal(err)
		}
		v.Name, v.OnCorruption = prefix+name, onCorruption
		return v
	}

	if os.Getpid() == 1 {
		// Only in TestInVM's guest: remove the control node that
		// devtmpfs made, as an initramfs /dev without devtmpfs lacks it;
		// the Create below must make it again.
		t.Run("control node missing", func(t *testing.T) {
			if err := os.Remove(ControlPath); err != nil {
				t.Fatal(err)
			}
			if _, err := Status(prefix + "none"); !errors.Is(err, unix.ENXIO) {
				t.Errorf("status of a missing device without a control node: %v, want ENXIO", err)
			}
			if devNumber(t, ControlPath) != "10:236" {
				t.Errorf("%s is %s, want 10:236", ControlPath, devNumber(t, ControlPath))
			}
		})
	}

	t.Run("good", func(t *testing.T) {
		v := verityOn(t, "good", dataDev, root, "")
		v.UUID = "ABBOOT-TEST-" + v.Name
		dev := create(t, v)
		got, err := os.ReadFile(dev)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s: %d bytes differ from the data's %d", dev, len(got), len(data))
		}
		if s := statusField(t, v.Name); s != "V" {
			t.Errorf("status %q after reading good data, want V", s)
		}
		// The kernel reports the table back with devices as major:minor.
		want := strings.Replace(strings.Replace(v.Table(), dataDev, devNumber(t, dataDev), 1), hashDev, devNumber(t, hashDev), 1)
		if got, err := Table(v.Name); err != nil || got != want {
			t.Errorf("live table %q, %v\nwant       %q", got, err, want)
		}
		// DM_READONLY_FLAG made the disk read-only.
		if f, err := os.Open(dev); err != nil {
			t.Error(err)
		} else {
			ro, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKROGET)
			f.Close()
			if err != nil || ro != 1 {
				t.Errorf("BLKROGET on %s: %d, %v; want read-only", dev, ro, err)
			}
		}
		if path, err := exec.LookPath("dmsetup"); err == nil {
			out, err := exec.Command(path, "table", v.Name).CombinedOutput()
			if w := fmt.Sprintf("0 %d verity %s\n", v.Sectors(), want); err != nil || string(out) != w {
				t.Errorf("dmsetup table: %q, %v; want %q", out, err, w)
			}
		}

		// A second device of the same name is refused and the first
		// one survives.
		if _, err := Create(v); !errors.Is(err, unix.EBUSY) {
			t.Errorf("creating %s twice: %v, want EBUSY", v.Name, err)
		}
		if s := statusField(t, v.Name); s != "V" {
			t.Errorf("status %q after a refused duplicate", s)
		}

		if err := Remove(v.Name); err != nil {
			t.Fatal(err)
		}
		if _, err := Status(v.Name); !errors.Is(err, unix.ENXIO) {
			t.Errorf("status after Remove: %v, want ENXIO", err)
		}
		if _, err := os.Stat(dev); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Remove: %v", dev, err)
		}
	})

	t.Run("corrupt block reads EIO", func(t *testing.T) {
		v := verityOn(t, "eio", badDev, root, "")
		f, err := os.Open(create(t, v))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, blockSize)
		if _, err := f.ReadAt(b, (bad-1)*blockSize); err != nil || !bytes.Equal(b, data[(bad-1)*blockSize:bad*blockSize]) {
			t.Errorf("block before the corrupt one: %v", err)
		}
		if _, err := f.ReadAt(b, bad*blockSize); !errors.Is(err, syscall.EIO) {
			t.Errorf("reading the corrupt block: %v, want EIO", err)
		}
		if s := statusField(t, v.Name); s != "C" {
			t.Errorf("status %q after a corrupt block, want C", s)
		}
	})

	t.Run("ignore corruption", func(t *testing.T) {
		v := verityOn(t, "ignore", badDev, root, IgnoreCorruption)
		got, err := os.ReadFile(create(t, v))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, badData) {
			t.Error("ignore_corruption did not return the corrupt data as it is")
		}
		if s := statusField(t, v.Name); s != "C" {
			t.Errorf("status %q, want C", s)
		}
	})

	t.Run("wrong root hash", func(t *testing.T) {
		wrong := bytes.Clone(root)
		wrong[0] ^= 1
		f, err := os.Open(create(t, verityOn(t, "wrongroot", dataDev, wrong, "")))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := io.ReadFull(f, make([]byte, blockSize)); !errors.Is(err, syscall.EIO) {
			t.Errorf("reading under a wrong root hash: %v, want EIO", err)
		}
	})

	t.Run("refused table leaves no device", func(t *testing.T) {
		v := verityOn(t, "refused", dataDev, root[:5], "") // not a sha256 digest
		if dev, err := Create(v); !errors.Is(err, unix.EINVAL) {
			t.Fatalf("Create with a 5-byte root hash: %s, %v; want EINVAL", dev, err)
		}
		if _, err := Status(v.Name); !errors.Is(err, unix.ENXIO) {
			t.Errorf("half-made device left behind: %v", err)
		}
	})
}

// TestWaitNodeTimeout checks the bounded wait for a node that never comes.
func TestWaitNodeTimeout(t *testing.T) {
	start := time.Now()
	_, err := waitNode(unix.Mkdev(1, 3), 50*time.Millisecond) // /dev/dm-3 is not /dev/null
	if err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("waitNode: %v after %v", err, time.Since(start))
	}
	if _, err := waitNode(unix.Mkdev(1, 3), 0); err == nil || !strings.Contains(err.Error(), "/dev/dm-3") {
		t.Errorf("waitNode error does not name the node: %v", err)
	}
}
