// Package dm sets up and tears down device-mapper devices through the
// kernel's ioctl interface (include/uapi/linux/dm-ioctl.h, version 4),
// for abboot's init: PID 1 inside a UKI, whose initramfs has no dmsetup,
// veritysetup or udev. Its one target is dm-verity: Create maps a slot's
// root partition read-only, checked against its verity partition and the
// root hash from the signed kernel command line.
//
// It is hand-written because no Go library fits: the Go device-mapper
// clients wrap libdevmapper through cgo, which a static u-root init
// cannot link, or carry thin-provisioning and LVM layers abboot does not
// need; and this code sits on the boot path, where a small client whose
// byte layout is pinned by tests is easier to trust than a dependency.
//
// Without udev nobody creates /dev/mapper/NAME links: Create returns the
// kernel's own node, /dev/dm-N, which devtmpfs creates. It does not load
// kernel modules (dm-mod and dm-verity must be loaded or built in), does
// not wait for udev, and does not handle other targets, multi-target
// tables, table reloads of live devices, deferred removal, or root hash
// signatures.
package dm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlPath is the device-mapper control node. devtmpfs creates it
// (as mapper/control) when dm-mod is loaded; an initramfs whose /dev is not
// devtmpfs may lack it, and then openControl creates it.
const ControlPath = "/dev/mapper/control"

// controlDevPath is where sysfs gives the control node's "major:minor"
// (10:236, MAPPER_CTRL_MINOR, on every kernel so far; read rather than
// assumed).
const controlDevPath = "/sys/class/misc/device-mapper/dev"

// NodeTimeout bounds how long Create waits for devtmpfs to create the
// new device's node.
const NodeTimeout = 5 * time.Second

// busyTimeout bounds how long Remove retries a device that is busy, as it
// is for a moment after creation when udev (on a full system) probes it.
const busyTimeout = 2 * time.Second

// statusBufSize is the first buffer size for replies that carry a table
// or status; the kernel sets DM_BUFFER_FULL_FLAG when it is too small.
const statusBufSize = 16 << 10

// checkName refuses names the kernel refuses (dm-ioctl.c, check_name and
// invalid_str) or that would not fit.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) >= nameLen {
		return fmt.Errorf("invalid device-mapper name %q", name)
	}
	return nil
}

// openControl opens the control node, creating it if it is missing.
func openControl() (*os.File, error) {
	f, err := os.OpenFile(ControlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		if err != nil {
			return nil, fmt.Errorf("opening device-mapper control: %w", err)
		}
		return f, nil
	}
	b, err := os.ReadFile(controlDevPath)
	if err != nil {
		return nil, fmt.Errorf("device-mapper is not available (is dm-mod loaded?): %w", err)
	}
	major, minor, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	maj, err1 := strconv.ParseUint(major, 10, 32)
	mnr, err2 := strconv.ParseUint(minor, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%s: bad device number %q", controlDevPath, b)
	}
	if err := os.MkdirAll(filepath.Dir(ControlPath), 0o755); err != nil {
		return nil, fmt.Errorf("creating device-mapper control: %w", err)
	}
	err = unix.Mknod(ControlPath, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(maj), uint32(mnr))))
	// devtmpfs may have created it since the open above.
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("creating device-mapper control: %w", err)
	}
	f, err = os.OpenFile(ControlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening device-mapper control: %w", err)
	}
	return f, nil
}

// control is an open control node.
type control struct{ f *os.File }

// do sends one request and returns the decoded reply header and buffer.
// When the reply would carry data (wantData), it grows the buffer until
// the kernel no longer reports it full.
func (c control) do(cmd uint, h header, targets []target, wantData bool) (header, []byte, error) {
	h.Version = interfaceVersion
	size := headerSize
	if wantData {
		size = statusBufSize
	}
	for {
		b, err := encode(h, targets, size)
		if err != nil {
			return header{}, nil, err
		}
		if err := c.ioctl(cmd, b); err != nil {
			return header{}, nil, err
		}
		r, err := decodeHeader(b)
		if err != nil {
			return header{}, nil, err
		}
		if r.Flags&unix.DM_BUFFER_FULL_FLAG == 0 || !wantData {
			return r, b, nil
		}
		if size >= 16<<20 {
			return header{}, nil, fmt.Errorf("device-mapper reply for %s exceeds %d bytes", h.Name, size)
		}
		size *= 4
	}
}

func (c control) ioctl(cmd uint, b []byte) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, c.f.Fd(), uintptr(cmd), uintptr(unsafe.Pointer(&b[0])))
		if errno != unix.EINTR {
			if errno != 0 {
				return errno
			}
			return nil
		}
	}
}

func (c control) remove(name string) error {
	deadline := time.Now().Add(busyTimeout)
	for {
		_, _, err := c.do(unix.DM_DEV_REMOVE, header{Name: name}, nil, false)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("removing device-mapper device %s: %w", name, err)
			}
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Create creates the read-only dm-verity device v, activates it and
// returns its node, /dev/dm-N, once devtmpfs has created it (within
// NodeTimeout). A device of that name must not exist. If any step after
// the device was created fails, the half-made device is removed again.
//
// When the table is refused (a wrong root hash length, a device too
// small, no dm-verity in the kernel) the kernel returns only EINVAL and
// says why in its log.
func Create(v Verity) (dev string, err error) {
	if err := checkName(v.Name); err != nil {
		return "", err
	}
	if err := v.check(); err != nil {
		return "", fmt.Errorf("%s: %w", v.Name, err)
	}
	f, err := openControl()
	if err != nil {
		return "", err
	}
	defer f.Close()
	c := control{f}
	// DM_DEV_CREATE makes a device with no table; DM_TABLE_LOAD gives it
	// an inactive one, read-only with DM_READONLY_FLAG (the table's
	// devices are then opened for reading only); resuming it, a
	// DM_DEV_SUSPEND without DM_SUSPEND_FLAG, makes that table live.
	if _, _, err := c.do(unix.DM_DEV_CREATE, header{Name: v.Name, UUID: v.UUID}, nil, false); err != nil {
		return "", fmt.Errorf("creating device-mapper device %s: %w", v.Name, err)
	}
	defer func() {
		if err != nil {
			if rerr := c.remove(v.Name); rerr != nil {
				err = fmt.Errorf("%w (and %v)", err, rerr)
			}
		}
	}()
	t := target{Length: v.Sectors(), Type: "verity", Params: v.Table()}
	if _, _, err := c.do(unix.DM_TABLE_LOAD, header{Name: v.Name, Flags: unix.DM_READONLY_FLAG}, []target{t}, false); err != nil {
		return "", fmt.Errorf("loading dm-verity table for %s (see the kernel log): %w", v.Name, err)
	}
	r, _, err := c.do(unix.DM_DEV_SUSPEND, header{Name: v.Name}, nil, false)
	if err != nil {
		return "", fmt.Errorf("resuming device-mapper device %s: %w", v.Name, err)
	}
	return waitNode(r.Dev, NodeTimeout)
}

// waitNode waits for devtmpfs to create the block device node of the
// device-mapper device dev (huge_encode_dev, which unix.Major and
// unix.Minor decode), named dm-MINOR by the kernel (dm.c, alloc_dev).
func waitNode(dev uint64, timeout time.Duration) (string, error) {
	path := fmt.Sprintf("/dev/dm-%d", unix.Minor(dev))
	deadline := time.Now().Add(timeout)
	for {
		var st unix.Stat_t
		err := unix.Stat(path, &st)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == dev {
			return path, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("it is not block device %d:%d", unix.Major(dev), unix.Minor(dev))
			}
			return "", fmt.Errorf("waiting %v for %s: %w", timeout, path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Remove removes the device-mapper device name. It fails with EBUSY
// while the device is open (mounted, or held by another device).
func Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	f, err := openControl()
	if err != nil {
		return err
	}
	defer f.Close()
	return control{f}.remove(name)
}

// Status returns the status line of the device's single target, as
// `dmsetup status` prints it after the start, length and type. For
// dm-verity its first field is "V" while every block read so far has
// verified and "C" once one has not (verity.rst, Status); newer kernels
// add more fields after it.
func Status(name string) (string, error) {
	t, err := tableStatus(name, 0)
	if err != nil {
		return "", fmt.Errorf("status of %s: %w", name, err)
	}
	return t.Params, nil
}

// Table returns the live table line of the device's single target as
// the kernel reports it back (what `dmsetup table` prints after the
// start, length and type): block devices appear as major:minor.
func Table(name string) (string, error) {
	t, err := tableStatus(name, unix.DM_STATUS_TABLE_FLAG)
	if err != nil {
		return "", fmt.Errorf("table of %s: %w", name, err)
	}
	return t.Params, nil
}

func tableStatus(name string, flags uint32) (target, error) {
	if err := checkName(name); err != nil {
		return target{}, err
	}
	f, err := openControl()
	if err != nil {
		return target{}, err
	}
	defer f.Close()
	h, b, err := control{f}.do(unix.DM_TABLE_STATUS, header{Name: name, Flags: flags}, nil, true)
	if err != nil {
		return target{}, err
	}
	ts, err := decodeTargets(h, b)
	if err != nil {
		return target{}, err
	}
	if len(ts) != 1 {
		return target{}, fmt.Errorf("device has %d targets, not one", len(ts))
	}
	return ts[0], nil
}
