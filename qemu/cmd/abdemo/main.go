// Command abdemo builds abboot's demo images and boots them in QEMU
// through OVMF, printing the console's abboot lines as they come and a
// timeline at the end. It is README's demo command:
//
//	go run ./qemu/cmd/abdemo [-out DIR]
//
// The story: a fresh disk and fresh firmware variables boot v1 in slot A
// through the fallback copy; abboot's init creates the boot entries and the
// demo OS commits. A signed v2 bundle, on a second virtual disk, is
// installed into slot B and reached by kexec (abctl counts its try
// first); v2 comes up and commits. A v3 that never passes its health check
// is installed into A with two tries: each try fails and reboots, and the
// machine comes back on v2 by itself.
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
	for _, im := range []struct{ name, version, cmdline, what string }{
		{"v1", "1", "abboot.watchdog=30", "version 1"},
		{"v2", "2", "abboot.watchdog=30", "version 2"},
		{"v3", "3", "abboot.watchdog=30 abboot-demo.health=fail", "version 3, which never passes its health check"},
	} {
		ukis[im.name] = filepath.Join(d.out, "abboot-"+im.name+".efi")
		d.say("building the UKI of %s", im.what)
		if err := demodisk.UKI(ukis[im.name], im.version, im.cmdline); err != nil {
			return err
		}
	}
	img := filepath.Join(d.out, "disk.img")
	d.say("writing %s: ESP with v1 in slot A (and as BOOTX64.EFI); slot B empty", img)
	if err := demodisk.Disk(img, demodisk.AB(ukis["v1"], ukis["v1"])); err != nil {
		return err
	}
	bundles := filepath.Join(d.out, "bundles.img")
	d.say("signing update bundles of v2 and v3 onto a second disk, %s", bundles)
	if err := demodisk.Bundles(bundles, map[string]string{"v2.abb": ukis["v2"], "v3.abb": ukis["v3"]}); err != nil {
		return err
	}
	vars := filepath.Join(d.out, "vars.fd")
	if err := qemu.NewVars(vars); err != nil {
		return err
	}
	vm, err := qemu.Start(context.Background(), qemu.Options{
		Disks: []string{img, bundles}, VarsFile: vars, Watchdog: true,
		Log: filepath.Join(d.out, "serial.log"), Timeout: 20 * time.Minute, Echo: qemu.LineWriter(d.echo),
	})
	if err != nil {
		return err
	}
	defer vm.Kill()
	steps := []struct {
		say, cmd, want string
	}{
		{"power on: fresh firmware variables; v1 in slot A comes up and commits", "", `abboot-demo: up version=1 slot=a`},
		{"", "mkdir -p /run/b", ""},
		{"", "mount -t vfat /dev/vdb /run/b", ""},
		{"update: install the signed v2 bundle into slot B, then reboot into it by kexec", "abctl install --reboot=kexec /run/b/v2.abb", `abboot-demo: up version=2 slot=b`},
		{"", "abctl status", ""},
		{"", "mkdir -p /run/b", ""},
		{"", "mount -t vfat /dev/vdb /run/b", ""},
		{"bad update: install v3 into slot A with 2 tries; it fails its health check and the machine rolls back by itself", "abctl install --tries 2 --reboot=kexec /run/b/v3.abb", `abboot-demo: up version=2 slot=b`},
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
			if _, err := vm.Expect(st.want, 10*time.Minute); err != nil {
				return err
			}
		}
		// Every step ends at the demo's prompt.
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
	fmt.Printf("\nboot it yourself: go run ./qemu/cmd/abvm --vars %s %s %s\n", vars, img, bundles)
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

// echo prints the console lines a person wants to see: abboot's events,
// the demo OS and the output of the commands it runs; not the kernel's
// messages or the firmware's screen control.
func (d *demo) echo(line string) {
	// A carriage return starts the line over, as on a terminal.
	if j := strings.LastIndexByte(line, '\r'); j >= 0 {
		line = line[j+1:]
	}
	if strings.HasPrefix(line, "[") || strings.Contains(line, "\x1b") || strings.TrimSpace(line) == "" {
		return
	}
	fmt.Println(line)
	if m, ok := event.Parse(line); ok && m["event"] != "modules" && m["event"] != "esp" {
		d.note("    " + strings.TrimPrefix(line, "abboot: "))
	}
}
