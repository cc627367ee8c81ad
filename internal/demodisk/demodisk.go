// Package demodisk builds demo UKIs with mkuimage.sh and disks holding
// them with abimage, for the demo command and the benches. It runs from
// the repository root.
package demodisk

import (
	"bytes"
	"debug/pe"
	"fmt"
	"maps"
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

// SecureBootKeys makes an owner's Secure Boot key set named name in dir
// (abimage sbkeys: PK, KEK and db, and their .auth updates), unless dir
// holds one already.
func SecureBootKeys(dir, name string) error {
	if _, err := os.Stat(filepath.Join(dir, "PK.auth")); err == nil {
		return nil
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := run("go", "run", "./cmds/abimage", "sbkeys", "--name", name, "-o", tmp); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

// SignedUKI is UKI signed, with the kernel inside it, by the db key of
// the key set in keys (mkuimage.sh with ABBOOT_SB_KEYS).
func SignedUKI(out, version, cmdline, keys string) error {
	cmd := exec.Command("./mkuimage.sh", "-v", version, "-c", cmdline, "-o", out)
	cmd.Env = append(os.Environ(), "ABBOOT_SB_KEYS="+keys)
	return runCmd(cmd)
}

// Tamper writes to out a copy of the UKI in with one bit of section sec
// flipped: an image changed after it was signed, as by someone who can
// write the ESP. In .cmdline it changes a digit of "=30"
// (abboot.watchdog=30), so that the command line stays valid and only a
// signature check can tell.
func Tamper(in, out, sec string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	f, err := pe.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	s := f.Section(sec)
	if s == nil || s.Size == 0 {
		return fmt.Errorf("%s has no %s section", in, sec)
	}
	off := int(s.Offset) + int(min(s.VirtualSize, s.Size))/2
	if sec == ".cmdline" {
		i := bytes.Index(b[s.Offset:s.Offset+s.Size], []byte("=30"))
		if i < 0 {
			return fmt.Errorf("no =30 in %s's command line", in)
		}
		off = int(s.Offset) + i + 1
	}
	b[off] ^= 1
	return os.WriteFile(out, b, 0o644)
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
// and puts them, and files (name -> host file) as they are, on a FAT file
// system image at out, for a second disk.
func Bundles(out string, ukis, files map[string]string) error {
	dir, err := os.MkdirTemp("", "abboot-bundles-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Remove(out)
	if err := run("mkfs.vfat", "-C", out, "131072"); err != nil {
		return err
	}
	all := maps.Clone(files)
	if all == nil {
		all = map[string]string{}
	}
	for name, uki := range ukis {
		all[name] = filepath.Join(dir, name)
		if err := run("go", "run", "./cmds/abimage", "bundle", "--key", Key(), "--compatible", Compatible, "--uki", uki, "-o", all[name]); err != nil {
			return err
		}
	}
	for name, f := range all {
		if err := run("mcopy", "-i", out, f, "::"+name); err != nil {
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
	return runCmd(exec.Command(name, args...))
}

func runCmd(cmd *exec.Cmd) error {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	if os.Getenv("ABBOOT_VERBOSE") != "" {
		os.Stderr.Write(out)
	}
	return nil
}
