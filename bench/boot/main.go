// Command boot is the boot bench (bench/boot.sh). It builds the demo UKI,
// boots a disk holding it through OVMF once to create the firmware entries,
// then -n more times in the steady state, and reports medians as ratios:
//
//   - the UKI's size against the 24 MiB target;
//   - the init's work other than module loading against the kernel's own
//     boot time (target under 5%);
//   - module loading's wall time against the sum of the time each module's
//     probe took (below 1 means modules loaded concurrently).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/abboot/abboot/bench/internal/bootrun"
	"github.com/abboot/abboot/internal/demodisk"
	"github.com/abboot/abboot/qemu"
)

func main() { bootrun.Main("boot", 3, run) }

func run(c bootrun.Config, dir string) error {
	ukiPath := filepath.Join(dir, "abboot.efi")
	img := filepath.Join(dir, "disk.img")
	if err := demodisk.UKI(ukiPath, "1", ""); err != nil {
		return err
	}
	if err := demodisk.Disk(img, demodisk.AB(ukiPath, ukiPath)); err != nil {
		return err
	}
	samples, err := bootrun.SteadyState(c.N, dir, func(vars string) (bootrun.Sample, error) { return boot(img, vars, c.CPUs, c.Log) })
	if err != nil {
		return err
	}
	fi, err := os.Stat(ukiPath)
	if err != nil {
		return err
	}
	size := float64(fi.Size()) / (1 << 20)
	kernel, elapsed, modules, sum := bootrun.Median(samples, "kernel_ms"), bootrun.Median(samples, "elapsed_ms"), bootrun.Median(samples, "modules_ms"), bootrun.Median(samples, "modules_sum_ms")
	rest := elapsed - modules
	fmt.Printf("boot bench: %d steady-state boots, %d vCPUs, TCG; medians\n", c.N, c.CPUs)
	fmt.Printf("  UKI size                 %6.1f MiB   %5.2f of the 24 MiB target (want < 1)\n", size, size/24)
	fmt.Printf("  kernel boot to init      %6.0f ms\n", kernel)
	fmt.Printf("  init start to exec       %6.0f ms    %5.3f of kernel boot\n", elapsed, elapsed/kernel)
	fmt.Printf("    module loading         %6.0f ms    %5.3f of kernel boot\n", modules, modules/kernel)
	fmt.Printf("    the rest               %6.0f ms    %5.3f of kernel boot (want < 0.05)\n", rest, rest/kernel)
	fmt.Printf("  module loading, wall / sum of per-module probes  %5.2f (< 1: concurrent)\n", modules/sum)
	return nil
}

// boot boots once and returns the numbers of the init's exec and modules
// events.
func boot(img, vars string, cpus int, serialLog string) (bootrun.Sample, error) {
	vm, err := qemu.Start(context.Background(), qemu.Options{Disks: []string{img}, VarsFile: vars, CPUs: cpus, Log: serialLog, Timeout: 5 * time.Minute})
	if err != nil {
		return nil, err
	}
	defer vm.Kill()
	s := bootrun.Sample{}
	if err := s.Events(vm, 3*time.Minute, "modules", "exec"); err != nil {
		return nil, err
	}
	if _, err := vm.Expect(`abboot-demo: ready`, time.Minute); err != nil {
		return nil, err
	}
	vm.Send("poweroff\r")
	return s, vm.Wait()
}
