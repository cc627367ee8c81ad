// Package demodisk builds demo UKIs with mkuimage.sh and disks holding
// them with abimage, for the demo command and the benches. It runs from
// the repository root.
package demodisk

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// UKI builds a demo UKI of the given version with extra kernel
// parameters.
func UKI(out, version, cmdline string) error {
	return run("./mkuimage.sh", "-v", version, "-c", cmdline, "-o", out)
}

// Disk writes a GPT disk whose ESP holds files (ESP path -> host file).
func Disk(out string, files map[string]string) error {
	args := []string{"run", "./cmds/abimage", "disk", "-o", out}
	for dst, src := range files {
		args = append(args, "--esp-file", dst+"="+src)
	}
	return run("go", args...)
}

// AB is the usual layout: a in slot A and as the fallback copy, b in B.
func AB(a, b string) map[string]string {
	return map[string]string{"EFI/abboot/a.efi": a, "EFI/abboot/b.efi": b, "EFI/BOOT/BOOTX64.EFI": a}
}

func run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	if os.Getenv("ABBOOT_VERBOSE") != "" {
		os.Stderr.Write(out)
	}
	return nil
}
