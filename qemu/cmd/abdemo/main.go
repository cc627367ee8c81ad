// Command abdemo builds abboot's demo images and boots them in QEMU
// through OVMF, printing the console's abboot lines as they come and a
// timeline at the end. It is README's demo command:
//
//	go run ./qemu/cmd/abdemo [-out DIR] [-secureboot]
//
// The story: a fresh disk and fresh firmware variables boot v1 in slot A
// through the fallback copy; abboot's init creates the boot entries and the
// demo OS commits. A signed v2 bundle, on a second virtual disk, is
// installed into slot B and reached by kexec (abctl counts its try
// first); v2 comes up and commits. A v3 that never passes its health check
// is installed into A with two tries: each try fails and reboots, and the
// machine comes back on v2 by itself.
//
// With -secureboot the machine runs OVMF's Secure Boot build and the story
// is the verified boot chain (docs/design.md): signed v1 comes up in setup
// mode; `abctl secureboot enroll` puts the demo's own PK, KEK and db into
// the firmware and a firmware reboot turns Secure Boot on; slot B holds a
// copy of v2 changed after signing, which the init refuses to hand over
// to (event=verify) and marks bad, staying on A; an unsigned bundle is
// refused before a byte is written; signed v2 is installed into B and
// reached by a verified kexec, leaving both slots signed.
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
	out        string
	secureBoot bool
	start      time.Time

	mu       sync.Mutex // the console goroutine adds to the timeline too
	timeline []string
}

func main() {
	d := &demo{start: time.Now()}
	flag.StringVar(&d.out, "out", "out/demo", "directory for images, variables and the serial log")
	flag.BoolVar(&d.secureBoot, "secureboot", false, "show the verified boot chain: keys enrolled, signed slots, a verified kexec, a tampered UKI refused")
	flag.Parse()
	if err := d.run(); err != nil {
		fmt.Fprintln(os.Stderr, "abdemo:", err)
		os.Exit(1)
	}
}

// image is a demo UKI to build; signed ones are signed by the demo's
// Secure Boot keys.
type image struct {
	name, version, cmdline, what string
	signed                       bool
}

// step is one step on the console: what the demo says, the command it
// types, and the lines it waits for, in order, before the next prompt.
type step struct {
	say, cmd string
	want     []string
}

// story is what the demo boots and does.
type story struct {
	disks []string
	steps []step
}

func (d *demo) run() error {
	if err := os.MkdirAll(d.out, 0o755); err != nil {
		return err
	}
	plot := d.plain
	if d.secureBoot {
		plot = d.verified
	}
	st, err := plot()
	if err != nil {
		return err
	}
	vars := filepath.Join(d.out, "vars.fd")
	if err := qemu.NewVars(vars); err != nil {
		return err
	}
	vm, err := qemu.Start(context.Background(), qemu.Options{
		Disks: st.disks, VarsFile: vars, Watchdog: true, SecureBoot: d.secureBoot,
		Log: filepath.Join(d.out, "serial.log"), Timeout: 20 * time.Minute, Echo: qemu.LineWriter(d.echo),
	})
	if err != nil {
		return err
	}
	defer vm.Kill()
	for _, s := range st.steps {
		if s.say != "" {
			d.say("%s", s.say)
		}
		if s.cmd != "" {
			fmt.Printf("\n# %s\n", s.cmd)
			vm.Send(s.cmd + "\r")
		}
		for _, w := range s.want {
			if _, err := vm.Expect(w, 10*time.Minute); err != nil {
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
	sb := ""
	if d.secureBoot {
		sb = "--secureboot "
	}
	fmt.Printf("\nboot it yourself: go run ./qemu/cmd/abvm %s--vars %s %s\n", sb, vars, strings.Join(st.disks, " "))
	return nil
}

// build builds the UKIs, signed ones with the Secure Boot keys in keys,
// and returns their paths by name.
func (d *demo) build(images []image, keys string) (map[string]string, error) {
	ukis := map[string]string{}
	for _, im := range images {
		ukis[im.name] = filepath.Join(d.out, "abboot-"+im.name+".efi")
		d.say("building the UKI of %s", im.what)
		var err error
		if im.signed {
			err = demodisk.SignedUKI(ukis[im.name], im.version, im.cmdline, keys)
		} else {
			err = demodisk.UKI(ukis[im.name], im.version, im.cmdline)
		}
		if err != nil {
			return nil, err
		}
	}
	return ukis, nil
}

// mountBundles are the steps that mount the bundle disk at /run/b.
var mountBundles = []step{{cmd: "mkdir -p /run/b"}, {cmd: "mount -t vfat /dev/vdb /run/b"}}

// plain is the story of an update, a kexec and a rollback.
func (d *demo) plain() (story, error) {
	ukis, err := d.build([]image{
		{name: "v1", version: "1", cmdline: "abboot.watchdog=30", what: "version 1"},
		{name: "v2", version: "2", cmdline: "abboot.watchdog=30", what: "version 2"},
		{name: "v3", version: "3", cmdline: "abboot.watchdog=30 abboot-demo.health=fail", what: "version 3, which never passes its health check"},
	}, "")
	if err != nil {
		return story{}, err
	}
	img := filepath.Join(d.out, "disk.img")
	d.say("writing %s: ESP with v1 in slot A (and as BOOTX64.EFI); slot B empty", img)
	if err := demodisk.Disk(img, demodisk.AB(ukis["v1"], ukis["v1"])); err != nil {
		return story{}, err
	}
	bundles := filepath.Join(d.out, "bundles.img")
	d.say("signing update bundles of v2 and v3 onto a second disk, %s", bundles)
	if err := demodisk.Bundles(bundles, map[string]string{"v2.abb": ukis["v2"], "v3.abb": ukis["v3"]}, nil); err != nil {
		return story{}, err
	}
	steps := []step{{say: "power on: fresh firmware variables; v1 in slot A comes up and commits", want: []string{`abboot-demo: up version=1 slot=a`}}}
	steps = append(steps, mountBundles...)
	steps = append(steps,
		step{say: "update: install the signed v2 bundle into slot B, then reboot into it by kexec", cmd: "abctl install --reboot=kexec /run/b/v2.abb", want: []string{`abboot-demo: up version=2 slot=b`}},
		step{cmd: "abctl status"})
	steps = append(steps, mountBundles...)
	steps = append(steps,
		step{say: "bad update: install v3 into slot A with 2 tries; it fails its health check and the machine rolls back by itself", cmd: "abctl install --tries 2 --reboot=kexec /run/b/v3.abb", want: []string{`abboot-demo: up version=2 slot=b`}},
		step{cmd: "abctl status"})
	return story{disks: []string{img, bundles}, steps: steps}, nil
}

// verified is the story of the verified boot chain (-secureboot).
func (d *demo) verified() (story, error) {
	keys := filepath.Join(d.out, "sbkeys")
	d.say("making the owner's Secure Boot keys (PK, KEK, db) in %s", keys)
	if err := demodisk.SecureBootKeys(keys, "abboot demo"); err != nil {
		return story{}, err
	}
	ukis, err := d.build([]image{
		{name: "v1", version: "1", cmdline: "abboot.watchdog=30", what: "version 1, signed with db (the UKI and the kernel in it)", signed: true},
		{name: "v2", version: "2", cmdline: "abboot.watchdog=30", what: "version 2, signed", signed: true},
		{name: "v3", version: "3", cmdline: "abboot.watchdog=30", what: "version 3, not signed"},
	}, keys)
	if err != nil {
		return story{}, err
	}
	tampered := filepath.Join(d.out, "abboot-v2-tampered.efi")
	if err := demodisk.Tamper(ukis["v2"], tampered, ".initrd"); err != nil {
		return story{}, err
	}
	img := filepath.Join(d.out, "disk.img")
	d.say("writing %s: ESP with signed v1 in slot A (and as BOOTX64.EFI); in slot B, signed v2 with one byte of its initrd changed since", img)
	if err := demodisk.Disk(img, demodisk.AB(ukis["v1"], tampered)); err != nil {
		return story{}, err
	}
	bundles := filepath.Join(d.out, "bundles.img")
	d.say("signing update bundles of v2 (signed UKI) and v3 (unsigned UKI) onto a second disk, %s, with the keys' .auth updates", bundles)
	auth := map[string]string{}
	for _, v := range []string{"db", "KEK", "PK"} {
		auth[v+".auth"] = filepath.Join(keys, v+".auth")
	}
	if err := demodisk.Bundles(bundles, map[string]string{"v2.abb": ukis["v2"], "v3.abb": ukis["v3"]}, auth); err != nil {
		return story{}, err
	}
	steps := []step{
		{say: "power on: OVMF's Secure Boot build, no keys yet (setup mode), so nothing is enforced; signed v1 in slot A comes up", want: []string{`abboot-demo: up version=1 slot=a`}},
		{cmd: "abctl status"},
	}
	steps = append(steps, mountBundles...)
	steps = append(steps,
		step{say: "enroll the keys: db, KEK, then PK, from the .auth updates (no private key on the device)", cmd: "abctl secureboot enroll /run/b"},
		step{say: "reboot through the firmware, which now enforces Secure Boot: SecureBoot=1, the kernel locked down", cmd: "abctl reboot --firmware", want: []string{`abboot-demo: up version=1 slot=a`}},
		step{cmd: "abctl status"},
		step{cmd: "mount -t securityfs securityfs /sys/kernel/security"},
		step{cmd: "cat /sys/kernel/security/lockdown"},
		step{say: "a tampered UKI: ask for slot B, whose UKI changed after signing; the init refuses to hand over to it (event=verify), marks it bad and stays on A", cmd: "abctl set-active b"},
		step{cmd: "reboot", want: []string{`abboot: event=verify slot=b .*marked=bad .*result=error`, `abboot-demo: up version=1 slot=a`}},
	)
	steps = append(steps, mountBundles...)
	steps = append(steps,
		step{say: "a bundle whose UKI is not signed is refused before a byte is written", cmd: "abctl install /run/b/v3.abb", want: []string{`abctl install: .*Secure Boot is on and the bundle's UKI would not boot`}},
		step{say: "update: install signed v2 into slot B (its UKI checked before the first write), then a kexec the init verifies first", cmd: "abctl install --reboot=kexec /run/b/v2.abb", want: []string{`abboot: event=verify slot=b .*result=ok`, `abboot-demo: up version=2 slot=b`}},
		step{say: "both slots signed, Secure Boot on", cmd: "abctl status"},
	)
	return story{disks: []string{img, bundles}, steps: steps}, nil
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
