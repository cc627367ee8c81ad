// Command verity is the verity bench (bench/verity.sh). It writes an image
// of pseudo-random data, builds its hash tree with `abimage verity format`
// and with `veritysetup format` (same salt and uuid), checks that both give
// the same root hash and the same hash file, and reports from that one run
// the speed ratio and each tool's peak resident memory. The same is done
// for verify. abimage's peak memory is also measured on a small image, to
// show that it does not grow with the image.
//
// Targets: abimage at least 2x faster than veritysetup on 2 cores; its
// peak RSS under 64 MiB for any image size.
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/tool"
)

func main() {
	size := flag.Int64("size", 1024, "image size in MiB")
	small := flag.Int64("small", 16, "size in MiB of the small image for the memory comparison")
	flag.Parse()
	if err := run(*size<<20, *small<<20); err != nil {
		fmt.Fprintln(os.Stderr, "bench/verity:", err)
		os.Exit(1)
	}
}

// result is one measured process.
type result struct {
	out    string
	wall   time.Duration
	cpu    time.Duration // user + system
	maxRSS int64         // bytes
}

// measure runs a command under GNU time and takes its wall time, CPU time
// and peak resident set size. wait4's own rusage would not do: Go starts
// children with vfork, and Linux charges the parent's RSS at exec time to
// the child's maxrss, so every child would seem at least as big as this
// bench. GNU time forks a fresh, small process instead.
func measure(name string, args ...string) (result, error) {
	timeFile, err := os.CreateTemp("", "abboot-verity-time-")
	if err != nil {
		return result{}, err
	}
	timeFile.Close()
	defer os.Remove(timeFile.Name())
	cmd := exec.Command(gnuTime, append([]string{"-f", "%M %U %S", "-o", timeFile.Name(), name}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err = cmd.Run()
	r := result{out: out.String(), wall: time.Since(start)}
	if err != nil {
		return r, fmt.Errorf("%s %s: %w: %s%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	t, err := os.ReadFile(timeFile.Name())
	if err != nil {
		return r, err
	}
	var kib int64
	var user, sys float64
	if _, err := fmt.Sscan(string(t), &kib, &user, &sys); err != nil {
		return r, fmt.Errorf("reading GNU time's output %q: %w", t, err)
	}
	r.maxRSS = kib << 10
	r.cpu = time.Duration((user + sys) * float64(time.Second))
	return r, nil
}

// gnuTime is GNU time, found by run.
var gnuTime string

// writeImage writes size bytes of ChaCha8 output: as good as random for
// hashing, and far faster than /dev/urandom.
func writeImage(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var seed [32]byte
	rand.Read(seed[:])
	r := mrand.NewChaCha8(seed)
	buf := make([]byte, 4<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		b := buf[:min(int64(len(buf)), left)]
		r.Read(b)
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

var rootLine = regexp.MustCompile(`(?m)^Root hash:\s+([0-9a-f]{64})$`)

func run(size, small int64) error {
	vs, err := tool.Path("veritysetup")
	if err != nil {
		return err
	}
	if gnuTime, err = exec.LookPath("/usr/bin/time"); err != nil {
		return errors.New("GNU time not found: apt-get install time")
	}
	dir, err := os.MkdirTemp("", "abboot-verity-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	abimage := filepath.Join(dir, "abimage")
	if out, err := exec.Command("go", "build", "-o", abimage, "./cmds/abimage").CombinedOutput(); err != nil {
		return fmt.Errorf("building abimage: %v\n%s", err, out)
	}
	data, smallData := filepath.Join(dir, "data"), filepath.Join(dir, "small")
	if err := writeImage(data, size); err != nil {
		return err
	}
	if err := writeImage(smallData, small); err != nil {
		return err
	}
	saltb := make([]byte, 32)
	rand.Read(saltb)
	salt := hex.EncodeToString(saltb)
	u, err := guid.New()
	if err != nil {
		return err
	}
	ours, theirs := filepath.Join(dir, "hash.abimage"), filepath.Join(dir, "hash.veritysetup")
	common := []string{"--salt", salt, "--uuid", u.String()}

	// The image was just written, so both tools read it from the page cache.
	fa, err := measure(abimage, append(append([]string{"verity", "format"}, common...), data, ours)...)
	if err != nil {
		return err
	}
	fv, err := measure(vs, append(append([]string{"format"}, common...), data, theirs)...)
	if err != nil {
		return err
	}
	rootA := strings.TrimSpace(fa.out)
	m := rootLine.FindStringSubmatch(fv.out)
	if m == nil {
		return fmt.Errorf("no root hash in veritysetup's output:\n%s", fv.out)
	}
	if rootA != m[1] {
		return fmt.Errorf("root hashes differ: abimage %s, veritysetup %s", rootA, m[1])
	}
	ha, err := os.ReadFile(ours)
	if err != nil {
		return err
	}
	hv, err := os.ReadFile(theirs)
	if err != nil {
		return err
	}
	if !bytes.Equal(ha, hv) {
		return errors.New("hash files differ")
	}
	va, err := measure(abimage, "verity", "verify", data, theirs, rootA)
	if err != nil {
		return err
	}
	vv, err := measure(vs, "verify", data, ours, rootA)
	if err != nil {
		return err
	}
	fs, err := measure(abimage, append(append([]string{"verity", "format"}, common...), smallData, filepath.Join(dir, "hash.small"))...)
	if err != nil {
		return err
	}

	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	fmt.Printf("verity bench: %d MiB pseudo-random image, %d CPUs, one run, page cache warm\n", size>>20, runtime.NumCPU())
	fmt.Printf("  root hash            identical %s…, hash files identical (%d bytes)\n", rootA[:16], len(ha))
	row := func(what string, a, v result) {
		fmt.Printf("  %-9s wall       abimage %6.3f s   veritysetup %6.3f s   speedup %5.2fx (want >= 2)\n",
			what, a.wall.Seconds(), v.wall.Seconds(), v.wall.Seconds()/a.wall.Seconds())
		fmt.Printf("  %-9s cpu        abimage %6.3f s   veritysetup %6.3f s   %5.2f GiB/s vs %5.2f GiB/s wall\n",
			what, a.cpu.Seconds(), v.cpu.Seconds(), float64(size)/(1<<30)/a.wall.Seconds(), float64(size)/(1<<30)/v.wall.Seconds())
		fmt.Printf("  %-9s peak RSS   abimage %6.1f MiB veritysetup %6.1f MiB ratio %5.2f; abimage/64 MiB target %4.2f (want < 1)\n",
			what, mib(a.maxRSS), mib(v.maxRSS), float64(a.maxRSS)/float64(v.maxRSS), mib(a.maxRSS)/64)
	}
	row("format", fa, fv)
	row("verify", va, vv)
	fmt.Printf("  format peak RSS on a %d MiB image: abimage %.1f MiB; %d MiB/%d MiB image ratio %.2f (want ~1: flat)\n",
		small>>20, mib(fs.maxRSS), size>>20, small>>20, float64(fa.maxRSS)/float64(fs.maxRSS))
	return nil
}
