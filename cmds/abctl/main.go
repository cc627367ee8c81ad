// Command abctl is abboot's device-side CLI: it shows and changes the slot
// state of the running system, or of an image file and a directory of EFI
// variables (--disk, --efivars) for tests and image builders.
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

type globals struct {
	efivars string
	disk    string
	json    bool
}

var commands = map[string]func(g *globals, args []string) error{
	"status": statusCmd,
}

func usage() string {
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return "usage: abctl [--efivars DIR] [--disk IMG] [--json] " + strings.Join(names, "|") + " [args]"
}

func main() {
	var g globals
	fs := flag.NewFlagSet("abctl", flag.ContinueOnError)
	fs.StringVar(&g.efivars, "efivars", "", "directory of EFI variables (default: the live efivarfs)")
	fs.StringVar(&g.disk, "disk", "", "disk or image file (default: the disk abboot booted from)")
	fs.BoolVar(&g.json, "json", false, "JSON output")
	fs.Usage = func() { fmt.Fprintln(os.Stderr, usage()) }
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() == 0 {
		fs.Usage()
		os.Exit(2)
	}
	cmd, ok := commands[fs.Arg(0)]
	if !ok {
		fmt.Fprintf(os.Stderr, "abctl: unknown command %q; %s\n", fs.Arg(0), usage())
		os.Exit(2)
	}
	if err := cmd(&g, fs.Args()[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "abctl %s: %v\n", fs.Arg(0), err)
		os.Exit(1)
	}
}
