//go:build linux && (amd64 || arm || arm64 || loong64 || ppc || ppc64 || ppc64le || riscv64 || s390x)

package kexec

import "golang.org/x/sys/unix"

// kexecFileLoad is kexec_file_load(2); tests replace it. x/sys appends the
// command line's terminating NUL and counts it in cmdline_len, as the
// kernel requires (kernel/kexec_file.c rejects a command line whose last
// byte is not NUL).
var kexecFileLoad = unix.KexecFileLoad
