// Command verify is the UKI verification bench (bench/verify.sh). It reads
// the serial logs of boots in which a handover target's UKI was verified
// against Secure Boot's db (event=verify) and, before a kexec, measured
// into PCR 11 (event=measure): the e2e tests TestSecureBootTampered (the
// init refuses B at boot) and TestSecureBootUpdate (abctl reboot verifies
// and measures B, with swtpm), which the script runs. For the boots with a
// verify event it reports the medians of the check's and the
// measurement's times, as shares of the kernel's boot time (kernel_ms of
// the start event) and of the init's own time (elapsed_ms of its exec or
// handover event) in the same boot.
//
// Target: verification under 2% of the kernel's boot time.
//
// A reference measured in the same run explains the figures: the same
// Verify and the same PCR 11 hashing of a UKI built like the guest's, on
// the host, with Go's SHA-NI/AVX2 code and again (a child process with
// GODEBUG=cpu.sha=off,cpu.avx2=off) with the generic code, which is what
// the guest runs: QEMU 7.2's TCG has no SHA-NI, and its qemu64 CPU no
// AVX2. Guest time over host generic time is TCG's cost for the same code.
package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/abboot/abboot/bench/internal/stats"
	"github.com/abboot/abboot/pkg/measure"
	"github.com/abboot/abboot/pkg/secureboot"
	"github.com/abboot/abboot/pkg/uki"
)

const generic = "GODEBUG=cpu.sha=off,cpu.avx2=off"

func main() {
	ukiPath := flag.String("uki", "", "a signed UKI built like the guest's, for the host reference")
	keys := flag.String("keys", "", "the key set that signed it (abimage sbkeys), whose db the host check uses")
	host := flag.Bool("host", false, "only print the host reference line (the bench runs itself so)")
	banks := flag.String("banks", "sha256", "the PCR banks to hash in the host reference")
	runs := flag.Int("runs", 5, "host reference runs (median)")
	cpus := flag.Int("cpus", 1, "the guest's vCPUs: the host reference runs with as many (GOMAXPROCS)")
	flag.Parse()
	var err error
	if *host {
		err = printHost(*ukiPath, *keys, *banks, *runs)
	} else {
		err = run(flag.Args(), *ukiPath, *keys, *runs, *cpus)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/verify:", err)
		os.Exit(1)
	}
}

var (
	startRE   = regexp.MustCompile(`abboot: event=start .*kernel_ms=(\d+)`)
	verifyRE  = regexp.MustCompile(`abboot: event=verify .*bytes=(\d+) ms=(\d+)`)
	measureRE = regexp.MustCompile(`abboot: event=measure .*banks=(\S+) hash_ms=(\d+) ms=(\d+)`)
	initRE    = regexp.MustCompile(`abboot: event=(?:exec|handover) .*elapsed_ms=(\d+)`)
)

// boot is what one boot's serial lines say; -1 is not said.
type boot struct {
	kernel, init, bytes, verify, hash, measure int64
	banks                                      string
}

// parse returns the boots of a serial log that verified a UKI, and the
// kernel boot times of all its boots. A boot
// starts at its start event; the init's exec or handover event may come
// before the check (abctl reboot, on the running OS) or after it (the
// init's own check).
func parse(path string) (checked []boot, kernels []int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	cur := boot{kernel: -1}
	done := func() {
		if cur.kernel >= 0 && cur.verify >= 0 && cur.init >= 0 {
			checked = append(checked, cur)
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if m := startRE.FindStringSubmatch(l); m != nil {
			done()
			cur = boot{kernel: atoi(m[1]), init: -1, bytes: -1, verify: -1, hash: -1, measure: -1}
			kernels = append(kernels, cur.kernel)
		}
		if cur.kernel < 0 {
			continue
		}
		if m := verifyRE.FindStringSubmatch(l); m != nil {
			cur.bytes, cur.verify = atoi(m[1]), atoi(m[2])
		}
		if m := measureRE.FindStringSubmatch(l); m != nil {
			cur.banks, cur.hash, cur.measure = m[1], atoi(m[2]), atoi(m[3])
		}
		if m := initRE.FindStringSubmatch(l); m != nil && cur.init < 0 {
			cur.init = atoi(m[1])
		}
	}
	done()
	return checked, kernels, sc.Err()
}

func run(logs []string, ukiPath, keys string, runs, cpus int) error {
	if len(logs) == 0 {
		return fmt.Errorf("usage: verify [-uki UKI -keys DIR] SERIAL.log...")
	}
	var boots []boot
	var kernels []int64
	for _, l := range logs {
		b, k, err := parse(l)
		if err != nil {
			return err
		}
		boots, kernels = append(boots, b...), append(kernels, k...)
	}
	if len(boots) == 0 {
		return fmt.Errorf("no boot with start, verify and exec or handover events in %s", strings.Join(logs, " "))
	}
	med := func(f func(boot) int64) int64 {
		var v []int64
		for _, b := range boots {
			if x := f(b); x >= 0 {
				v = append(v, x)
			}
		}
		if len(v) == 0 {
			return -1
		}
		return stats.Median(v)
	}
	// The kernel's boot does not depend on the check: all boots count.
	kernel, initMS := stats.Median(kernels), med(func(b boot) int64 { return b.init })
	verify, size := med(func(b boot) int64 { return b.verify }), med(func(b boot) int64 { return b.bytes })
	hash, meas := med(func(b boot) int64 { return b.hash }), med(func(b boot) int64 { return b.measure })
	banks := "sha256"
	for _, b := range boots {
		if b.banks != "" {
			banks = b.banks
		}
	}
	fmt.Printf("verify bench: %d boots with a UKI check, %d vCPUs, TCG, medians\n", len(boots), cpus)
	fmt.Printf("  UKI %.1f MB; kernel boot %d ms (all %d boots); init %d ms (in the boots with the check)\n",
		float64(size)/1e6, kernel, len(kernels), initMS)
	fmt.Printf("  verify  %5d ms = %5.1f%% of the kernel's boot (target < 2%%), %5.1f%% of the init's time; %.0f MB/s\n",
		verify, pct(verify, kernel), pct(verify, initMS), mbps(size, verify))
	if meas >= 0 {
		fmt.Printf("  measure %5d ms = %5.1f%% of the kernel's boot, %5.1f%% of the init's time (banks %s, hashing %d ms)\n",
			meas, pct(meas, kernel), pct(meas, initMS), banks, hash)
		fmt.Printf("  handover: verify + measure %d ms = %.1f%% of the kernel's boot\n", verify+meas, pct(verify+meas, kernel))
	} else {
		fmt.Println("  measure: no measure event (no TPM in these boots)")
	}
	if ukiPath == "" {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var ref [2]hostRef
	for i, env := range []string{"", generic} {
		cmd := exec.Command(self, "-host", "-uki", ukiPath, "-keys", keys, "-banks", banks, "-runs", strconv.Itoa(runs))
		cmd.Env = append(os.Environ(), env, "GOMAXPROCS="+strconv.Itoa(cpus))
		// Not cmd.Stderr: golang.org/x/sys/cpu complains there about
		// the GODEBUG key it does not know, which the runtime does.
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		if err != nil {
			return fmt.Errorf("host reference %s: %w", env, err)
		}
		if _, err := fmt.Sscan(string(out), &ref[i].bytes, &ref[i].verify, &ref[i].hash); err != nil {
			return fmt.Errorf("host reference %s: %q: %w", env, out, err)
		}
	}
	fmt.Printf("reference, same run, on this host (%s, %d CPUs as the guest, median of %d; generic: %s):\n",
		filepath.Base(ukiPath), cpus, runs, generic)
	for i, name := range []string{"SHA-NI/AVX2 code", "generic code, as the guest's"} {
		r := ref[i]
		fmt.Printf("  %-28s verify %6.1f ms (%4.0f MB/s), PCR 11 hashing (%s) %6.1f ms\n", name,
			ms(r.verify), float64(r.bytes)/r.verify.Seconds()/1e6, banks, ms(r.hash))
	}
	g := ref[1]
	perByte := float64(verify) / float64(size) // ms per guest byte
	fmt.Printf("  TCG's cost for the same code: verify %.1fx the host's generic time", perByte*float64(g.bytes)/ms(g.verify))
	if hash >= 0 {
		fmt.Printf(", PCR 11 hashing %.1fx", float64(hash)/ms(g.hash))
	}
	fmt.Println()
	fmt.Printf("  the host's check (%.1f ms) is under 2%% of any kernel boot longer than %.0f ms\n",
		ms(ref[0].verify), 50*ms(ref[0].verify))
	return nil
}

// hostRef is one host reference: the UKI's size and median times.
type hostRef struct {
	bytes        int64
	verify, hash time.Duration
}

// printHost times Verify and the PCR 11 hashing of the UKI on this host
// and prints "bytes verify_ns hash_ns".
func printHost(path, keys, bankNames string, runs int) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	ks, err := secureboot.LoadKeySet(keys)
	if err != nil {
		return err
	}
	db := &secureboot.Database{Certs: []*x509.Certificate{ks.DB.Cert}}
	algs, err := measure.ParseBanks(bankNames)
	if err != nil {
		return err
	}
	var verify, hash []int64
	for range runs {
		start := time.Now()
		if _, err := secureboot.Verify(b, db, nil); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		verify = append(verify, int64(time.Since(start)))
		start = time.Now()
		img, err := uki.Parse(b)
		if err != nil {
			return err
		}
		if _, err := measure.Hash(context.Background(), algs, measure.Events(img), nil); err != nil {
			return err
		}
		hash = append(hash, int64(time.Since(start)))
	}
	fmt.Println(len(b), stats.Median(verify), stats.Median(hash))
	return nil
}

func pct(a, b int64) float64 { return 100 * float64(a) / float64(b) }

func mbps(bytes, ms int64) float64 { return float64(bytes) / float64(ms) / 1e3 }

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
