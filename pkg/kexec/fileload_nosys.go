//go:build linux && !(amd64 || arm || arm64 || loong64 || ppc || ppc64 || ppc64le || riscv64 || s390x)

package kexec

import "golang.org/x/sys/unix"

// kexecFileLoad fails as the syscall would on architectures without
// kexec_file_load(2) (i386, mips), so that the caller falls back to a
// firmware reboot.
var kexecFileLoad = func(kernelFd, initrdFd int, cmdline string, flags int) error {
	return unix.ENOSYS
}
