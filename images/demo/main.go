// Command demo is the init of abboot's demo OS, which lives in the
// initramfs next to abboot's own init (the ESP-only layout, as Sbnb does).
// abboot's init execs it as PID 1 once the slot is chosen. It prints
//
//	abboot-demo: up version=V slot=S
//
// runs a health check, then reads commands from the console: "poweroff"
// and "reboot" act directly (it is PID 1), anything else is run as a
// program, so that tests and people can drive it over the serial line.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/osrelease"
	"github.com/abboot/abboot/pkg/runstate"
)

func main() {
	version := osrelease.Read("/etc/os-release")["VERSION_ID"]
	st, err := runstate.Read()
	if err != nil {
		fmt.Printf("abboot-demo: no abboot run state: %v\n", err)
	}
	fmt.Printf("abboot-demo: up version=%s slot=%s\n", version, st.Slot)
	if err := health(); err != nil {
		fmt.Printf("abboot-demo: health=fail reason=%q\n", err)
	} else {
		fmt.Println("abboot-demo: health=ok")
	}
	console()
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

// console runs commands typed on the console until the machine goes down.
// PID 1 must never return.
func console() {
	in := bufio.NewScanner(os.Stdin)
	for {
		fmt.Println("abboot-demo: ready")
		if !in.Scan() {
			// No console input (closed stdin): wait for a signal forever
			// rather than exit, which would panic the kernel.
			select {}
		}
		args := strings.Fields(in.Text())
		if len(args) == 0 {
			continue
		}
		switch args[0] {
		case "poweroff":
			halt(unix.LINUX_REBOOT_CMD_POWER_OFF)
		case "reboot":
			halt(unix.LINUX_REBOOT_CMD_RESTART)
		default:
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			err := cmd.Run()
			fmt.Printf("abboot-demo: exit cmd=%s status=%d\n", args[0], cmd.ProcessState.ExitCode())
			if err != nil && cmd.ProcessState == nil {
				fmt.Printf("abboot-demo: %v\n", err)
			}
		}
	}
}

func halt(how int) {
	unix.Sync()
	if err := unix.Reboot(how); err != nil {
		fmt.Printf("abboot-demo: reboot(%#x): %v\n", how, err)
	}
}
