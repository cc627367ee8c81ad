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
	var osrel, out, sbKeys string
	fs.StringVar(&s.Kernel, "kernel", "", "kernel image (bzImage)")
	fs.StringVar(&s.Initrd, "initrd", "", "initramfs")
	fs.StringVar(&s.Cmdline, "cmdline", "", "kernel command line")
	fs.StringVar(&osrel, "osrel", "", "os-release file for the .osrel section")
	fs.StringVar(&s.Stub, "stub", uki.DefaultStub, "UEFI stub")
	fs.StringVar(&out, "o", "", "output UKI")
	fs.StringVar(&sbKeys, "sb-keys", "", "Secure Boot key directory (abimage sbkeys): sign the kernel and the UKI with its db key")
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
	if sbKeys != "" {
		return buildSignedUKI(s, out, sbKeys)
	}
	return uki.Build(s, out)
}
