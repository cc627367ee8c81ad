// Command abdemo builds abboot's demo images and boots them in QEMU
// through OVMF, printing the console's abboot lines as they come and a
// timeline at the end. It is README's demo command:
//
//	go run ./qemu/cmd/abdemo [-out DIR]
//
// The story so far: a fresh disk and fresh firmware variables boot through
// the fallback copy, abboot's init creates the slots' boot entries, and the
// next boot comes through "abboot A" without writing anything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/qemu"
)

type demo struct {
	out   string
	start time.Time

	mu       sync.Mutex // the console goroutine adds to the timeline too
	timeline []string
}

func main() {
	d := &demo{start: time.Now()}
	flag.StringVar(&d.out, "out", "out/demo", "directory for images, variables and the serial log")
	flag.Parse()
	if err := d.run(); err != nil {
		fmt.Fprintln(os.Stderr, "abdemo:", err)
		os.Exit(1)
	}
}

func (d *demo) run() error {
	if err := os.MkdirAll(d.out, 0o755); err != nil {
		return err
	}
	ukis := map[string]string{}
	for _, v := range []string{"1", "2"} {
		ukis[v] = filepath.Join(d.out, "abboot-v"+v+".efi")
		d.say("building UKI version %s", v)
		if err := sh("./mkuimage.sh", "-v", v, "-o", ukis[v]); err != nil {
			return err
		}
	}
	img := filepath.Join(d.out, "disk.img")
	d.say("writing %s: ESP with a.efi (v1), b.efi (v2), BOOTX64.EFI (copy of v1)", img)
	if err := sh("go", "run", "./cmds/abimage", "disk", "-o", img,
		"--esp-file", "EFI/abboot/a.efi="+ukis["1"],
		"--esp-file", "EFI/abboot/b.efi="+ukis["2"],
		"--esp-file", "EFI/BOOT/BOOTX64.EFI="+ukis["1"]); err != nil {
		return err
	}
	vars := filepath.Join(d.out, "vars.fd")
	if err := qemu.NewVars(vars); err != nil {
		return err
	}
	for i, cmds := range [][]string{{"efibootmgr", "abctl status"}, {"abctl status"}} {
		d.say("boot %d", i+1)
		if err := d.boot(img, vars, cmds); err != nil {
			return err
		}
	}
	fmt.Println("\ntimeline:")
	for _, l := range d.timeline {
		fmt.Println("  " + l)
	}
	fmt.Printf("\nboot it yourself: go run ./qemu/cmd/abvm --vars %s %s\n", vars, img)
	return nil
}

// boot powers the VM on, waits for the demo OS, runs cmds in it, powers
// it off and notes the abboot events on the timeline.
func (d *demo) boot(img, vars string, cmds []string) error {
	vm, err := qemu.Start(context.Background(), qemu.Options{
		Disks: []string{img}, VarsFile: vars, Watchdog: true,
		Log: filepath.Join(d.out, "serial.log"), Timeout: 5 * time.Minute, Echo: &lineFilter{d: d},
	})
	if err != nil {
		return err
	}
	defer vm.Kill()
	if _, err := vm.Expect(`abboot-demo: ready`, 3*time.Minute); err != nil {
		return err
	}
	for _, c := range cmds {
		fmt.Printf("\n# %s\n", c)
		vm.Send(c + "\r")
		if _, err := vm.Expect(`abboot-demo: ready`, time.Minute); err != nil {
			return err
		}
	}
	vm.Send("poweroff\r")
	return vm.Wait()
}

func (d *demo) say(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Printf("\n== %s\n", msg)
	d.note("  " + msg)
}

func (d *demo) note(s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timeline = append(d.timeline, fmt.Sprintf("%6.1fs  %s", time.Since(d.start).Seconds(), s))
}

// lineFilter echoes the console lines a person wants to see: abboot's
// events, the demo OS and the output of the commands it runs; not the
// kernel's messages or the firmware's screen control.
type lineFilter struct {
	d       *demo
	partial string
}

func (f *lineFilter) Write(p []byte) (int, error) {
	f.partial += string(p)
	for {
		i := strings.IndexByte(f.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := strings.TrimRight(f.partial[:i], "\r")
		f.partial = f.partial[i+1:]
		if strings.HasPrefix(line, "[") || strings.Contains(line, "\x1b") || strings.TrimSpace(line) == "" {
			continue
		}
		fmt.Println(line)
		if m, ok := event.Parse(line); ok && m["event"] != "modules" && m["event"] != "esp" {
			f.d.note("    " + strings.TrimPrefix(line, "abboot: "))
		}
	}
}

func sh(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return nil
}
