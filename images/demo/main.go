// Command demo is the init of abboot's demo OS, which lives in the
// initramfs next to abboot's own init (the ESP-only layout, as Sbnb does).
// abboot's init execs it as PID 1 once the slot is chosen. It prints
//
//	abboot-demo: up version=V slot=S
//
// runs a health check and, when it passes, commits the slot with
// `abctl mark-good`, as an OS's own health check would. Then it reads
// commands from the console (pkg/console), so that tests and people can
// drive it over the serial line.
//
// For tests, the kernel command line can break the image on purpose:
// abboot-demo.health=fail fails the health check (the demo reboots after
// abboot-demo.reboot seconds, default 3, without committing) and
// abboot-demo.health=hang hangs after the up line without feeding the
// watchdog.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/console"
	"github.com/abboot/abboot/pkg/osrelease"
	"github.com/abboot/abboot/pkg/runstate"
)

func main() {
	// On a verity root the init starts us with an empty environment, as
	// an OS's init expects.
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", "/bbin:/bin:/usr/sbin:/usr/bin:/sbin")
	}
	version := osrelease.Read("/etc/os-release")["VERSION_ID"]
	st, err := runstate.Read()
	if err != nil {
		fmt.Printf("abboot-demo: no abboot run state: %v\n", err)
	}
	fmt.Printf("abboot-demo: up version=%s slot=%s\n", version, st.Slot)
	opts := options()
	switch {
	case opts["health"] == "hang":
		fmt.Println("abboot-demo: hanging on purpose")
		select {}
	case opts["health"] == "fail":
		fmt.Println(`abboot-demo: health=fail reason="failing on purpose"`)
		delay, _ := strconv.Atoi(opts["reboot"])
		time.Sleep(time.Duration(max(delay, 3)) * time.Second)
		halt(unix.LINUX_REBOOT_CMD_RESTART)
	}
	if err := health(); err != nil {
		fmt.Printf("abboot-demo: health=fail reason=%q\n", err)
	} else {
		fmt.Println("abboot-demo: health=ok")
		con.Exec("abctl", "mark-good")
	}
	con.Run()
	// No console input (closed stdin): wait forever rather than exit,
	// which would panic the kernel.
	select {}
}

// con is the demo's prompt on the console; "poweroff" and "reboot" act
// directly, since the demo is PID 1.
var con = &console.Console{
	Name: "abboot-demo", In: os.Stdin, Out: os.Stdout,
	Builtins: map[string]func([]string){
		"poweroff": func([]string) { halt(unix.LINUX_REBOOT_CMD_POWER_OFF) },
		"reboot":   func([]string) { halt(unix.LINUX_REBOOT_CMD_RESTART) },
	},
}

// options returns the abboot-demo.KEY=VALUE kernel parameters.
func options() map[string]string {
	b, _ := os.ReadFile("/proc/cmdline")
	m := map[string]string{}
	for _, f := range bootparam.Fields(string(b)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "abboot-demo.") {
			m[strings.TrimPrefix(k, "abboot-demo.")] = v
		}
	}
	return m
}

// health is the demo's stand-in for an OS's own health check: the pieces
// abboot's init promised to leave behind are there.
func health() error {
	if _, err := os.Stat("/sys/firmware/efi/efivars"); err != nil {
		return fmt.Errorf("efivarfs: %w", err)
	}
	if _, err := runstate.Read(); err != nil {
		return err
	}
	return nil
}

func halt(how int) {
	unix.Sync()
	if err := unix.Reboot(how); err != nil {
		fmt.Printf("abboot-demo: reboot(%#x): %v\n", how, err)
	}
}
