// Command osboot is the Debian boot bench (bench/osboot.sh). It builds the
// Debian image of images/debian (v1), lays out a disk with it in slot A and
// an empty /var partition, boots it once to create the firmware entries
// and format /var, then -n more times, and reports medians of:
//
//   - the time from the kernel's start to multi-user.target (systemd's
//     ActiveEnterTimestampMonotonic of multi-user.target: CLOCK_MONOTONIC,
//     which starts with the kernel);
//   - abboot's init in it: its whole time from start to the exec of
//     systemd, its module loading, and its own work (the rest), as shares
//     of the first (target: own work under 2%).
//
// Everything comes from the same boot; the numbers are TCG's, slow in
// absolute terms, so only the shares mean something across machines.
package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/abboot/abboot/bench/internal/bootrun"
	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/uki"
	"github.com/abboot/abboot/qemu"
)

func main() { bootrun.Main("osboot", 1, run) }

func run(c bootrun.Config, dir string) error {
	efi := filepath.Join(dir, "debian-v1.efi")
	if out, err := exec.Command("./images/debian/build.sh", "-o", efi, "v1").CombinedOutput(); err != nil {
		return fmt.Errorf("images/debian/build.sh: %v: %s", err, out)
	}
	img, err := disk(dir, efi)
	if err != nil {
		return err
	}
	samples, err := bootrun.SteadyState(c.N, dir, func(vars string) (bootrun.Sample, error) { return boot(img, vars, c.CPUs, c.Log) })
	if err != nil {
		return err
	}
	total, kernel, elapsed, modules := bootrun.Median(samples, "multi_user_ms"), bootrun.Median(samples, "kernel_ms"), bootrun.Median(samples, "elapsed_ms"), bootrun.Median(samples, "modules_ms")
	own := elapsed - modules
	fmt.Printf("osboot bench: Debian 12 + systemd on a verity root, %d steady-state boots, %d vCPUs, TCG; medians\n", c.N, c.CPUs)
	fmt.Printf("  kernel start to multi-user.target  %7.0f ms\n", total)
	fmt.Printf("  kernel start to abboot's init      %7.0f ms   %5.3f of it\n", kernel, kernel/total)
	fmt.Printf("  abboot's init, start to exec       %7.0f ms   %5.3f of it\n", elapsed, elapsed/total)
	fmt.Printf("    module loading                   %7.0f ms   %5.3f of it\n", modules, modules/total)
	fmt.Printf("    its own work                     %7.0f ms   %5.3f of it (want < 0.02)\n", own, own/total)
	fmt.Printf("  systemd, exec to multi-user.target %7.0f ms   %5.3f of it\n", total-kernel-elapsed, (total-kernel-elapsed)/total)
	return nil
}

// disk lays out the image in slot A with an empty /var partition.
func disk(dir, efi string) (string, error) {
	img, err := uki.ReadFile(efi, ".cmdline")
	if err != nil {
		return "", err
	}
	p, err := bootparam.Parse(string(img.Sections[".cmdline"]))
	if err != nil {
		return "", err
	}
	base := strings.TrimSuffix(efi, ".efi")
	out := filepath.Join(dir, "disk.img")
	cmd := exec.Command("go", "run", "./cmds/abimage", "disk", "-o", out,
		"--esp-file", "EFI/abboot/a.efi="+efi, "--esp-file", "EFI/BOOT/BOOTX64.EFI="+efi,
		"--verity-slot", "a:"+base+".root.img:"+base+".verity.img:"+p.RootHash,
		"--data", "256")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("abimage disk: %v: %s", err, b)
	}
	return out, nil
}

var numRE = regexp.MustCompile(`^osboot (\w+)=(\d+)$`)

// boot boots once, logs in on the serial console and returns the init's
// exec and modules numbers and multi-user.target's time in ms.
func boot(img, vars string, cpus int, serialLog string) (bootrun.Sample, error) {
	vm, err := qemu.Start(context.Background(), qemu.Options{Disks: []string{img}, VarsFile: vars, CPUs: cpus, Log: serialLog, Timeout: 20 * time.Minute})
	if err != nil {
		return nil, err
	}
	defer vm.Kill()
	s := bootrun.Sample{}
	if err := s.Events(vm, 5*time.Minute, "modules", "exec"); err != nil {
		return nil, err
	}
	if _, err := vm.ExpectPrompt(`root@abboot-debian:.*# $`, 10*time.Minute); err != nil {
		return nil, err
	}
	// The getty logs in before the boot is finished; is-system-running
	// --wait returns when it is.
	vm.Send("systemctl is-system-running --wait; echo osboot multi_user_us=$(systemctl show -P ActiveEnterTimestampMonotonic multi-user.target)\r")
	m, err := vm.Expect(numRE.String(), 5*time.Minute)
	if err != nil {
		return nil, err
	}
	us, _ := strconv.ParseFloat(m[2], 64)
	s["multi_user_ms"] = us / 1000
	vm.Send("systemctl poweroff\r")
	return s, vm.Wait()
}
