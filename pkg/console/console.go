// Package console runs commands typed on a serial console, one per line:
// the demo OS's prompt and abboot's rescue shell. A shell with a line
// editor (u-root's gosh) queries the terminal and waits for answers that a
// serial line, a BMC's console or a test harness may never send; this loop
// needs nothing from the terminal. It splits words on white space only: no
// quotes, pipes, redirections or variables (run gosh for those).
package console

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
)

// Console is one command loop.
type Console struct {
	// Name prefixes the loop's own lines: "NAME: ready" before each
	// command and "NAME: exit cmd=C status=N" after each program.
	Name string
	In   io.Reader
	Out  io.Writer
	// Builtins run in the loop's process (poweroff, reboot for PID 1).
	Builtins map[string]func(args []string)
}

// Run reads commands until In ends and returns then.
func (c *Console) Run() {
	in := bufio.NewScanner(c.In)
	for {
		fmt.Fprintf(c.Out, "%s: ready\n", c.Name)
		if !in.Scan() {
			return
		}
		args := strings.Fields(in.Text())
		if len(args) == 0 {
			continue
		}
		if f, ok := c.Builtins[args[0]]; ok {
			f(args[1:])
			continue
		}
		c.Exec(args[0], args[1:]...)
	}
}

// Exec runs a program on the console and reports how it ended.
func (c *Console) Exec(name string, args ...string) int {
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.In, c.Out, c.Out
	if f, ok := c.In.(*os.File); ok {
		cmd.Stdin = f
	}
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		fmt.Fprintf(c.Out, "%s: %v\n", c.Name, err)
	}
	code := cmd.ProcessState.ExitCode()
	fmt.Fprintf(c.Out, "%s: exit cmd=%s status=%d\n", c.Name, name, code)
	return code
}
