// Command abdemo builds abboot's demo images and boots them in QEMU
// through OVMF, printing the console's abboot lines as they come and a
// timeline at the end. It is README's demo command:
//
//	go run ./qemu/cmd/abdemo [-out DIR]
//
// The story: a fresh disk and fresh firmware variables boot v1 in slot A
// through the fallback copy; abboot's init creates the boot entries and the
// demo OS commits. Slot B holds v2: set active, it is reached by kexec
// (abctl counts its try first), comes up and commits; a rollback goes back
// to A by kexec. The install of a signed bundle into B replaces the
// build-time copy once abctl install exists.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/abboot/abboot/internal/demodisk"
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
		if err := demodisk.UKI(ukis[v], v, "abboot.watchdog=30"); err != nil {
			return err
		}
	}
	img := filepath.Join(d.out, "disk.img")
	d.say("writing %s: ESP with a.efi (v1), b.efi (v2), BOOTX64.EFI (copy of v1)", img)
	if err := demodisk.Disk(img, demodisk.AB(ukis["1"], ukis["2"])); err != nil {
		return err
	}
	vars := filepath.Join(d.out, "vars.fd")
	if err := qemu.NewVars(vars); err != nil {
		return err
	}
	vm, err := qemu.Start(context.Background(), qemu.Options{
		Disks: []string{img}, VarsFile: vars, Watchdog: true,
		Log: filepath.Join(d.out, "serial.log"), Timeout: 15 * time.Minute, Echo: &lineFilter{d: d},
	})
	if err != nil {
		return err
	}
	defer vm.Kill()
	steps := []struct {
		say, cmd, want string
	}{
		{"power on: fresh disk, fresh firmware variables; v1 in slot A comes up and commits", "", `abboot-demo: up version=1 slot=a`},
		{"", "abctl status", ""},
		{"update: make slot B (v2) the active one", "abctl set-active b", ""},
		{"fast reboot: abctl counts B's try and kexecs it, skipping the firmware", "abctl reboot --kexec", `abboot-demo: up version=2 slot=b`},
		{"", "abctl status", ""},
		{"rollback: back to A by kexec", "abctl rollback --reboot=kexec", `abboot-demo: up version=1 slot=a`},
		{"", "abctl status", ""},
	}
	for _, st := range steps {
		if st.say != "" {
			d.say("%s", st.say)
		}
		if st.cmd != "" {
			fmt.Printf("\n# %s\n", st.cmd)
			vm.Send(st.cmd + "\r")
		}
		if st.want != "" {
			if _, err := vm.Expect(st.want, 5*time.Minute); err != nil {
				return err
			}
		}
		if _, err := vm.Expect(`abboot-demo: ready`, 5*time.Minute); err != nil {
			return err
		}
	}
	vm.Send("poweroff\r")
	if err := vm.Wait(); err != nil {
		return err
	}
	fmt.Println("\ntimeline:")
	d.mu.Lock()
	for _, l := range d.timeline {
		fmt.Println("  " + l)
	}
	d.mu.Unlock()
	fmt.Printf("\nboot it yourself: go run ./qemu/cmd/abvm --vars %s %s\n", vars, img)
	return nil
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
