package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/abboot/abboot/pkg/bundle"
)

// keygenCmd makes an ed25519 key pair for signing bundles: NAME.key, the
// private key (PEM PKCS#8, mode 0600), and NAME.pub, the public key to
// put into the trust file of the images that are to accept the bundles.
// It never overwrites a key: losing one is worse than a failed command.
func keygenCmd(args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	name := fs.String("o", "", "NAME: write NAME.key (private) and NAME.pub (public)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || fs.NArg() > 0 {
		return errors.New("usage: abimage keygen -o NAME")
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	privPEM, err := bundle.MarshalPrivateKey(priv)
	if err != nil {
		return err
	}
	pubPEM, err := bundle.MarshalPublicKey(pub)
	if err != nil {
		return err
	}
	keyPath, pubPath := *name+".key", *name+".pub"
	if err := writeNew(keyPath, privPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(pubPath, pubPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	fmt.Printf("key %s: wrote %s (keep it secret) and %s\n", bundle.KeyID(pub), keyPath, pubPath)
	return nil
}

// writeNew writes a file that must not exist yet; a failure leaves
// nothing behind.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
