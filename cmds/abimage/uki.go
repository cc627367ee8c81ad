package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/abboot/abboot/pkg/uki"
)

func ukiCmd(args []string) error {
	fs := flag.NewFlagSet("uki", flag.ContinueOnError)
	var s uki.Spec
	var osrel, out string
	fs.StringVar(&s.Kernel, "kernel", "", "kernel image (bzImage)")
	fs.StringVar(&s.Initrd, "initrd", "", "initramfs")
	fs.StringVar(&s.Cmdline, "cmdline", "", "kernel command line")
	fs.StringVar(&osrel, "osrel", "", "os-release file for the .osrel section")
	fs.StringVar(&s.Stub, "stub", uki.DefaultStub, "UEFI stub")
	fs.StringVar(&out, "o", "", "output UKI")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if s.Kernel == "" || s.Initrd == "" || out == "" || fs.NArg() > 0 {
		return fmt.Errorf("need --kernel, --initrd and -o, and no arguments")
	}
	if osrel != "" {
		b, err := os.ReadFile(osrel)
		if err != nil {
			return err
		}
		s.OSRel = string(b)
	}
	return uki.Build(s, out)
}
