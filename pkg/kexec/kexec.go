// Package kexec starts another slot's unified kernel image without going
// through the firmware: it loads the UKI's .linux, .initrd and .cmdline
// sections with kexec_file_load(2) and jumps to them with
// reboot(LINUX_REBOOT_CMD_KEXEC).
//
// The sections are extracted from the PE file (pkg/uki) and handed to the
// kernel through memfds, so nothing is written to disk. The UEFI stub of the
// target UKI does not run: no measurements into TPM PCRs (pkg/handover
// makes the stub's PCR 11 measurement itself, pkg/measure), no firmware
// variables (BootCurrent, LoaderDevicePartUUID) describing the new boot.
// That is why the caller passes the handover on the command line (docs/design.md,
// rule 1) and falls back to a firmware reboot when the kernel refuses the
// load (see Refused).
//
// It does not decide whether to kexec, does not load crash kernels and does
// not support the older kexec_load(2) interface, which needs the caller to
// lay out the image and cannot be signature-checked under lockdown.
//
// The syscall wrapper is our own rather than u-root's pkg/boot/kexec: that
// package's FileLoad cannot pass KEXEC_FILE_UNLOAD, and its Reboot may
// disarm the hardware watchdog (UROOT_KEXEC_DISARM_WATCHDOG), which abboot
// arms on purpose right before the handover.
package kexec

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/abboot/abboot/pkg/uki"
	"golang.org/x/sys/unix"
)

// ErrRefused marks a kexec the running kernel declined: kexec_file_load
// is missing or disabled (ENOSYS, EPERM: no CAP_SYS_BOOT,
// kernel.kexec_load_disabled or lockdown), busy (EBUSY), will not take the
// image (EINVAL, ENOEXEC) or rejects its signature under
// CONFIG_KEXEC_SIG_FORCE or lockdown (EKEYREJECTED, ENOKEY, ENODATA,
// EBADMSG, ENOPKG: kernel/kexec_file.c kimage_validate_signature returns the
// verifier's error as is). A firmware reboot into the same UKI can still
// work, so the caller falls back to one (docs/design.md, Lessons).
var ErrRefused = errors.New("kexec refused by the kernel")

// refusals are the errnos of ErrRefused.
var refusals = []unix.Errno{
	unix.ENOSYS, unix.EPERM, unix.EACCES, unix.EBUSY, unix.EINVAL, unix.ENOEXEC,
	unix.EKEYREJECTED, unix.ENOKEY, unix.ENODATA, unix.EBADMSG, unix.ENOPKG,
}

// Refused reports whether err is ErrRefused: the kernel declined the kexec,
// as opposed to the UKI being unreadable or malformed, which a firmware
// reboot into it would not fix.
func Refused(err error) bool { return errors.Is(err, ErrRefused) }

// syscallErr wraps the error of a kexec syscall, adding ErrRefused when
// its errno is one of the refusals. Only syscall errors are classified: an
// EPERM from opening the UKI file says nothing about kexec.
func syscallErr(what string, err error) error {
	for _, e := range refusals {
		if errors.Is(err, e) {
			return fmt.Errorf("%s: %w: %w", what, ErrRefused, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Load loads the UKI at path for Exec: its .linux section as the kernel,
// its .initrd section (if any, and not empty) as the initramfs and its
// command line (uki.Image.Cmdline), passed through
// editCmdline (nil keeps it as is). The init uses editCmdline to append
// abboot.handover=SLOT (bootparam.WithHandover).
//
// A file that is not a UKI, has no .linux section or yields a command line
// with a NUL in it is an error before any syscall. If the kernel refuses
// the load, the error is ErrRefused and the kernel keeps whatever image was
// loaded before (kernel/kexec_file.c swaps images only on success).
func Load(path string, editCmdline func(string) string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("kexec of %s: %w", path, err)
	}
	return LoadImage(path, b, editCmdline)
}

// LoadImage is Load of a UKI already in memory, named path in errors: the
// init stages the very bytes it verified (pkg/secureboot), never a second
// read of the file.
func LoadImage(path string, b []byte, editCmdline func(string) string) error {
	img, err := uki.Parse(b)
	if err != nil {
		return fmt.Errorf("kexec of %s: %w", path, err)
	}
	kernel, ok := img.Sections[".linux"]
	if !ok {
		return fmt.Errorf("kexec of %s: not a UKI: no .linux section", path)
	}
	cmdline, err := prepareCmdline(img, editCmdline)
	if err != nil {
		return fmt.Errorf("kexec of %s: %w", path, err)
	}

	kfd, err := memfd("abboot-kernel", kernel)
	if err != nil {
		return fmt.Errorf("kexec of %s: %w", path, err)
	}
	defer kfd.Close()
	ifd, flags := -1, unix.KEXEC_FILE_NO_INITRAMFS
	// An empty .initrd cannot be loaded (kernel_read_file rejects an empty
	// file); treat it as none.
	if initrd := img.Sections[".initrd"]; len(initrd) > 0 {
		f, err := memfd("abboot-initrd", initrd)
		if err != nil {
			return fmt.Errorf("kexec of %s: %w", path, err)
		}
		defer f.Close()
		ifd, flags = int(f.Fd()), 0
	}
	if err := kexecFileLoad(int(kfd.Fd()), ifd, cmdline, flags); err != nil {
		return syscallErr(fmt.Sprintf("kexec_file_load of %s", path), err)
	}
	return nil
}

// prepareCmdline returns the command line to pass: the image's
// (uki.Image.Cmdline), edited.
func prepareCmdline(img *uki.Image, edit func(string) string) (string, error) {
	c, err := img.Cmdline()
	if err != nil {
		return "", err
	}
	if edit != nil {
		c = edit(c)
	}
	if strings.IndexByte(c, 0) >= 0 {
		return "", fmt.Errorf("command line %q has a NUL byte", c)
	}
	return c, nil
}

// memfd returns a close-on-exec memfd holding b, for a syscall that takes
// a file descriptor.
func memfd(name string, b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing memfd %s: %w", name, err)
	}
	return f, nil
}

// Exec syncs the file systems and jumps to the image that Load loaded. It
// returns only on failure: ErrRefused when nothing is loaded (EINVAL) or
// the caller lacks CAP_SYS_BOOT (EPERM).
func Exec() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_KEXEC); err != nil {
		return syscallErr("reboot(LINUX_REBOOT_CMD_KEXEC)", err)
	}
	return nil
}

// Unload drops the image Load loaded, so that a later kexec (for example
// systemd's "systemctl kexec") cannot start it.
func Unload() error {
	if err := kexecFileLoad(-1, -1, "", unix.KEXEC_FILE_UNLOAD); err != nil {
		return syscallErr("kexec_file_load(KEXEC_FILE_UNLOAD)", err)
	}
	return nil
}
