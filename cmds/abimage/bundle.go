package main

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/afero"

	"github.com/abboot/abboot/pkg/atomicfile"
	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/uki"
	"github.com/abboot/abboot/pkg/verity"
)

const bundleUsage = "usage: abimage bundle --key K.key --compatible C --uki F [--version V] [--root F --verity F [--roothash HEX]] -o OUT.abb"

// bundleCmd makes a signed update bundle. Before it signs anything it
// checks that the bundle would work once installed: the version is the
// one in the UKI's .osrel (VERSION_ID) when the UKI has one, the root
// hash is the abboot.roothash of the UKI's signed command line (so the
// installed UKI finds the installed root), and the root and verity tree
// verify against it.
func bundleCmd(args []string) error {
	fs := flag.NewFlagSet("bundle", flag.ContinueOnError)
	var keyPath, out, rootHash string
	var m bundle.Manifest
	files := map[string]*string{}
	for _, name := range []string{bundle.PayloadUKI, bundle.PayloadRoot, bundle.PayloadVerity} {
		files[name] = new(string)
		fs.StringVar(files[name], name, "", name+" payload file")
	}
	fs.StringVar(&keyPath, "key", "", "private signing key (from abimage keygen)")
	fs.StringVar(&m.Version, "version", "", "OS version (default: VERSION_ID of the UKI's .osrel)")
	fs.StringVar(&m.Compatible, "compatible", "", "systems the bundle is for, e.g. abboot-demo-x86_64")
	fs.StringVar(&rootHash, "roothash", "", "verity root hash (default: abboot.roothash of the UKI's command line, which it must match)")
	fs.StringVar(&out, "o", "", "output bundle")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if keyPath == "" || m.Compatible == "" || *files[bundle.PayloadUKI] == "" || out == "" || fs.NArg() > 0 {
		return errors.New(bundleUsage)
	}
	if (*files[bundle.PayloadRoot] == "") != (*files[bundle.PayloadVerity] == "") {
		return errors.New("--root and --verity come together")
	}
	key, err := bundle.LoadPrivateKey(keyPath)
	if err != nil {
		return err
	}
	if err := fromUKI(*files[bundle.PayloadUKI], &m, rootHash); err != nil {
		return err
	}
	if root := *files[bundle.PayloadRoot]; root != "" {
		if m.RootHash == "" {
			return fmt.Errorf("--root given, but the command line of %s has no abboot.roothash, so it would not find it", *files[bundle.PayloadUKI])
		}
		if err := checkVerity(root, *files[bundle.PayloadVerity], m.RootHash); err != nil {
			return err
		}
	} else if m.RootHash != "" {
		return fmt.Errorf("the UKI's command line has abboot.roothash=%s but there is no --root and --verity to go with it", m.RootHash)
	}
	if m.Created, err = created(); err != nil {
		return err
	}
	payloads := map[string]string{}
	for name, f := range files {
		if *f != "" {
			payloads[name] = *f
		}
	}
	if err := writeBundle(out, m, payloads, key); err != nil {
		return err
	}
	fmt.Printf("%s: version %s for %s, signed by key %s\n", out, m.Version, m.Compatible, bundle.KeyID(key.Public().(ed25519.PublicKey)))
	return nil
}

// fromUKI takes the version and root hash from the UKI at path into m,
// checking them against what was given on the command line.
func fromUKI(path string, m *bundle.Manifest, rootHash string) error {
	// Only the small sections: a whole-OS initramfs can be huge.
	img, err := uki.ReadFile(path, ".cmdline")
	if err != nil {
		return err
	}
	cmdline, err := img.Cmdline()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	bp, err := bootparam.Parse(cmdline)
	if err != nil {
		return fmt.Errorf("command line of %s: %w", path, err)
	}
	m.RootHash = bp.RootHash
	if rootHash != "" {
		h, err := verity.ParseRootHash(rootHash)
		if err != nil {
			return fmt.Errorf("--roothash: %w", err)
		}
		if hex.EncodeToString(h) != bp.RootHash {
			return fmt.Errorf("--roothash %s, but the command line of %s has abboot.roothash=%q", rootHash, path, bp.RootHash)
		}
	}
	// The file just read as a PE image, so an error here means there is
	// no .osrel section; then the version must be given.
	var osVersion string
	if osrel, err := uki.ReadFile(path, ".osrel"); err == nil {
		osVersion = osrel.OSRelease()["VERSION_ID"]
	}
	switch {
	case m.Version == "" && osVersion == "":
		return fmt.Errorf("no --version, and the .osrel of %s has no VERSION_ID", path)
	case m.Version == "":
		m.Version = osVersion
	case osVersion != "" && m.Version != osVersion:
		return fmt.Errorf("--version %s, but the .osrel of %s has VERSION_ID=%s", m.Version, path, osVersion)
	}
	return nil
}

// checkVerity verifies the root image against its tree and root hash, so
// that a bundle whose root would fail dm-verity on the device is never
// made.
func checkVerity(rootPath, treePath, rootHash string) error {
	h, err := verity.ParseRootHash(rootHash)
	if err != nil {
		return err
	}
	data, size, err := openData(rootPath)
	if err != nil {
		return err
	}
	defer data.Close()
	tree, err := os.Open(treePath)
	if err != nil {
		return err
	}
	defer tree.Close()
	if err := verity.Verify(data, size, tree, h, verity.Params{}); err != nil {
		return fmt.Errorf("--root %s with --verity %s and root hash %s: %w", rootPath, treePath, rootHash, err)
	}
	return nil
}

// created is the manifest's creation time: SOURCE_DATE_EPOCH when it is
// set, for reproducible builds (reproducible-builds.org/specs), else now.
func created() (string, error) {
	t := time.Now()
	if s, ok := os.LookupEnv("SOURCE_DATE_EPOCH"); ok {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return "", fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", s)
		}
		t = time.Unix(n, 0)
	}
	return t.UTC().Format(time.RFC3339), nil
}

// writeBundle writes the bundle to out with atomicfile, so that a failure
// leaves no partial bundle behind.
func writeBundle(out string, m bundle.Manifest, payloads map[string]string, key ed25519.PrivateKey) error {
	f, err := atomicfile.Create(afero.NewOsFs(), out, 0o644)
	if err != nil {
		return err
	}
	if err := bundle.Write(f, m, payloads, key); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
}
