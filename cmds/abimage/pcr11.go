package main

import (
	"errors"
	"flag"
	"fmt"

	"github.com/abboot/abboot/pkg/measure"
	"github.com/abboot/abboot/pkg/uki"
)

// pcr11Cmd prints the SHA-256 PCR 11 a machine shows after the firmware
// booted FIRST.efi and abboot's init then handed over by kexec to each
// NEXT.efi in turn (pkg/measure). With FIRST.efi alone it is the value of
// a firmware boot, which systemd-measure also computes.
func pcr11Cmd(args []string) error {
	fs := flag.NewFlagSet("pcr11", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: abimage pcr11 FIRST.efi [NEXT.efi ...]")
	}
	var path []*uki.Image
	for _, f := range fs.Args() {
		img, err := measure.ReadImage(f)
		if err != nil {
			return err
		}
		path = append(path, img)
	}
	fmt.Printf("%x\n", measure.Predict(path...))
	return nil
}
