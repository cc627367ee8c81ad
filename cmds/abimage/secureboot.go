package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/abboot/abboot/pkg/secureboot"
	"github.com/abboot/abboot/pkg/uki"
)

// sbkeysCmd makes the owner's Secure Boot keys: PK, KEK and db, each as
// NAME.key (private, 0600) and NAME.pem, in a new directory, with NAME.auth,
// the signed updates that `abctl secureboot enroll DIR` writes into the
// firmware (the device needs only the .auth files); db.key signs UKIs.
func sbkeysCmd(args []string) error {
	fs := flag.NewFlagSet("sbkeys", flag.ContinueOnError)
	dir := fs.String("o", "", "directory for PK, KEK and db (must not exist)")
	name := fs.String("name", "abboot", "common name prefix of the certificates")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() > 0 {
		return errors.New("usage: abimage sbkeys -o DIR [--name NAME]")
	}
	if err := os.Mkdir(*dir, 0o700); err != nil {
		return fmt.Errorf("key directory: %w", err)
	}
	ks, err := secureboot.GenerateKeySet(*name)
	if err != nil {
		return err
	}
	files, err := ks.Files()
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := writeNew(filepath.Join(*dir, f.Name), f.Data, f.Mode); err != nil {
			return err
		}
	}
	fmt.Printf("Secure Boot keys in %s: PK, KEK, db (db.key signs UKIs; keep the .key files secret; the .auth files enroll them)\n", *dir)
	return nil
}

// signCmd signs a PE image (a UKI, a kernel) with the db key of a key set,
// replacing any signature it had.
func signCmd(args []string) error {
	fs := flag.NewFlagSet("sign", flag.ContinueOnError)
	keys := fs.String("sb-keys", "", "Secure Boot key directory (abimage sbkeys)")
	out := fs.String("o", "", "signed output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keys == "" || *out == "" || fs.NArg() != 1 {
		return errors.New("usage: abimage sign --sb-keys DIR -o OUT IN.efi")
	}
	ks, err := secureboot.LoadKeySet(*keys)
	if err != nil {
		return err
	}
	return signFile(fs.Arg(0), *out, ks.DB)
}

// signFile writes in, signed by k, to out through a temporary file and a
// rename, so that out is never a half-signed image.
func signFile(in, out string, k secureboot.Key) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	signed, err := secureboot.Sign(b, k)
	if err != nil {
		return fmt.Errorf("signing %s: %w", in, err)
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, signed, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// buildSignedUKI builds a UKI whose kernel and whole image are signed by
// the db key: the kernel's vendor signature is replaced, because
// kexec_file_load checks only the first signature against the keys the
// kernel trusts (its builtin keys and, with Secure Boot, db).
func buildSignedUKI(s uki.Spec, out, keys string) error {
	ks, err := secureboot.LoadKeySet(keys)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".sign-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	kernel := filepath.Join(tmp, "linux")
	if err := signFile(s.Kernel, kernel, ks.DB); err != nil {
		return err
	}
	s.Kernel = kernel
	unsigned := filepath.Join(tmp, "uki.efi")
	if err := uki.Build(s, unsigned); err != nil {
		return err
	}
	return signFile(unsigned, out, ks.DB)
}
