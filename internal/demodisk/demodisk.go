// Package demodisk builds demo UKIs with mkuimage.sh and disks holding
// them with abimage, for the demo command and the benches. It runs from
// the repository root.
package demodisk

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// Cache is mkuimage.sh's cache directory: $ABBOOT_CACHE, else
// $XDG_CACHE_HOME/abboot, else ~/.cache/abboot (the script's rule).
func Cache() string {
	if d := os.Getenv("ABBOOT_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "abboot")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "abboot")
}

// Key is the demo's signing key, made by mkuimage.sh, whose public half
// every demo image trusts.
func Key() string { return filepath.Join(Cache(), "keys", "demo.key") }

// Compatible is the demo images' compatible string.
const Compatible = "abboot-demo-x86_64"

// Bundles signs a bundle of each UKI (bundle file name -> UKI) with Key
// and puts them on a FAT file system image at out, for a second disk.
func Bundles(out string, ukis map[string]string) error {
	dir, err := os.MkdirTemp("", "abboot-bundles-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Remove(out)
	if err := run("mkfs.vfat", "-C", out, "131072"); err != nil {
		return err
	}
	for name, uki := range ukis {
		abb := filepath.Join(dir, name)
		if err := run("go", "run", "./cmds/abimage", "bundle", "--key", Key(), "--compatible", Compatible, "--uki", uki, "-o", abb); err != nil {
			return err
		}
		if err := run("mcopy", "-i", out, abb, "::"+name); err != nil {
			return err
		}
	}
	return nil
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
