// Command reboot is the fast-reboot bench (bench/reboot.sh). It boots the
// demo, lets slot A commit, then reboots n times with `abctl reboot
// --kexec` and n times with `abctl reboot --firmware`, timing on the host
// the serial console from the reboot command to the next init's start event,
// and reports the medians and their ratio. Target: kexec at least 3 times
// faster.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/abboot/abboot/bench/internal/stats"
	"github.com/abboot/abboot/internal/demodisk"
	"github.com/abboot/abboot/qemu"
)

func main() {
	n := flag.Int("n", 3, "reboots of each kind")
	flag.StringVar(&serialLog, "log", "", "append the serial console to this file")
	flag.StringVar(&cmdline, "cmdline", "", "add to the kernel command line (loglevel=7 shows where a reboot spends its time)")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "bench/reboot:", err)
		os.Exit(1)
	}
}

var serialLog, cmdline string

func run(n int) error {
	dir, err := os.MkdirTemp("", "abboot-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ukiPath, img, vars := filepath.Join(dir, "abboot.efi"), filepath.Join(dir, "disk.img"), filepath.Join(dir, "vars.fd")
	if err := demodisk.UKI(ukiPath, "1", cmdline); err != nil {
		return err
	}
	if err := demodisk.Disk(img, demodisk.AB(ukiPath, ukiPath)); err != nil {
		return err
	}
	if err := qemu.NewVars(vars); err != nil {
		return err
	}
	vm, err := qemu.Start(context.Background(), qemu.Options{Disks: []string{img}, VarsFile: vars, Log: serialLog, Timeout: 30 * time.Minute, Echo: trace()})
	if err != nil {
		return err
	}
	defer vm.Kill()
	if _, err := vm.Expect(`abboot-demo: ready`, 3*time.Minute); err != nil {
		return err
	}
	took, own := map[string][]time.Duration{}, map[string][]time.Duration{}
	for i := 0; i < n; i++ {
		for _, how := range []string{"kexec", "firmware"} {
			// The clock starts with the command: abctl decides, and
			// for a kexec stages the UKI (kexec_file_load) before its
			// reboot event, which is part of the kexec's cost.
			t0 := time.Now()
			vm.Send("abctl reboot --" + how + "\r")
			if _, err := vm.Expect(`abboot: event=reboot slot=a action=`+how, time.Minute); err != nil {
				return err
			}
			m, err := vm.Expect(`abboot: event=start running=a .*kernel_ms=(\d+) t_ms=(\d+)`, 3*time.Minute)
			if err != nil {
				return err
			}
			took[how] = append(took[how], time.Since(t0))
			// The new kernel's clock starts at its own start: what it
			// and the init took is kernel_ms + t_ms, the rest went to
			// getting there (kexec: purgatory and decompression;
			// firmware: reset, POST, the stub and decompression).
			kms, _ := strconv.Atoi(m[1])
			tms, _ := strconv.Atoi(m[2])
			own[how] = append(own[how], time.Duration(kms+tms)*time.Millisecond)
			if _, err := vm.Expect(`abboot-demo: ready`, 3*time.Minute); err != nil {
				return err
			}
		}
	}
	k, f := stats.Median(took["kexec"]), stats.Median(took["firmware"])
	ko, fo := stats.Median(own["kexec"]), stats.Median(own["firmware"])
	fmt.Printf("reboot bench: %d reboots each, TCG, median time from the reboot command (decision, kexec staging) to the next init's start event\n", n)
	fmt.Printf("                 total   before the new kernel   kernel + init\n")
	fmt.Printf("  kexec       %6.2f s   %6.2f s                %6.2f s\n", k.Seconds(), (k - ko).Seconds(), ko.Seconds())
	fmt.Printf("  firmware    %6.2f s   %6.2f s                %6.2f s\n", f.Seconds(), (f - fo).Seconds(), fo.Seconds())
	fmt.Printf("  firmware / kexec  %5.2f (want >= 3)\n", f.Seconds()/k.Seconds())
	fmt.Printf("  firmware / (kernel + init): %5.2f, the most a kexec costing nothing could reach here\n", f.Seconds()/ko.Seconds())
	return nil
}

// trace prints the console's lines with the host time when
// ABBOOT_BENCH_TRACE is set, for seeing where a reboot spends its time.
func trace() io.Writer {
	if os.Getenv("ABBOOT_BENCH_TRACE") == "" {
		return nil
	}
	return qemu.LineWriter(func(line string) {
		fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05.000"), line)
	})
}
