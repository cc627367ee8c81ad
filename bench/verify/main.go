// Command verify is the UKI verification bench (bench/verify.sh). It reads
// the serial log of a boot whose init verified a handover target's UKI
// against Secure Boot's db (the e2e test TestSecureBootTampered, which the
// script runs) and reports, from that one boot, the time the check took
// as a share of the kernel's boot time (kernel_ms of the start event) and
// of the init's own time (elapsed_ms of the exec event).
//
// Target: under 2% of the kernel's boot time.
package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
)

var (
	startRE  = regexp.MustCompile(`abboot: event=start .*kernel_ms=(\d+)`)
	verifyRE = regexp.MustCompile(`abboot: event=verify .*bytes=(\d+) ms=(\d+)`)
	execRE   = regexp.MustCompile(`abboot: event=exec .*elapsed_ms=(\d+)`)
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: verify SERIAL.log")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "bench/verify:", err)
		os.Exit(1)
	}
}

// run finds the first boot with a verify event and reports it.
func run(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var kernel, bytes, verify int64 = -1, -1, -1
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if m := startRE.FindStringSubmatch(l); m != nil {
			kernel, bytes, verify = atoi(m[1]), -1, -1 // a new boot
		}
		if m := verifyRE.FindStringSubmatch(l); m != nil && kernel >= 0 {
			bytes, verify = atoi(m[1]), atoi(m[2])
		}
		if m := execRE.FindStringSubmatch(l); m != nil && verify >= 0 {
			initMS := atoi(m[1])
			fmt.Printf("UKI %d MiB verified in %d ms; kernel boot %d ms, init %d ms\n", bytes>>20, verify, kernel, initMS)
			fmt.Printf("verification = %.1f%% of the kernel's boot time (target < 2%%), %.1f%% of the init's time\n",
				100*float64(verify)/float64(kernel), 100*float64(verify)/float64(initMS))
			return nil
		}
	}
	return fmt.Errorf("%s: no boot with start, verify and exec events", path)
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
