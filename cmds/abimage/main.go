// Command abimage builds what abboot boots: UKIs, disk images, verity trees
// and update bundles. It runs on the build machine, needs no root and
// touches only the files it is given.
//
//	abimage uki --kernel K --initrd I --cmdline C [--osrel F] [--stub S] [--sb-keys DIR] -o OUT.efi
//	abimage disk --esp-file EFI/abboot/a.efi=PATH ... -o disk.img
//	abimage keygen -o NAME
//	abimage sbkeys -o DIR
//	abimage sign --sb-keys DIR -o OUT IN.efi
//	abimage pcr11 FIRST.efi [NEXT.efi ...]
//	abimage bundle --key K.key --compatible C --uki F [--root F --verity F] -o OUT.abb
package main

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

var commands = map[string]func(args []string) error{
	"uki":    ukiCmd,
	"disk":   diskCmd,
	"verity": verityCmd,
	"keygen": keygenCmd,
	"bundle": bundleCmd,
	"sbkeys": sbkeysCmd,
	"sign":   signCmd,
	"pcr11":  pcr11Cmd,
}

func usage() string {
	return "usage: abimage " + strings.Join(slices.Sorted(maps.Keys(commands)), "|") + " [flags]"
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage())
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "abimage: unknown command %q; %s\n", os.Args[1], usage())
		os.Exit(2)
	}
	if err := cmd(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "abimage %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
