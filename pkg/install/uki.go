package install

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/uki"
)

// payload returns the manifest entry of the payload named name.
func (in *installer) payload(name string) bundle.Payload {
	for _, p := range in.m.Payloads {
		if p.Name == name {
			return p
		}
	}
	return bundle.Payload{}
}

// checkHash reads size bytes from r and compares their sha256 with the
// manifest's, and that nothing follows when r is a file.
func (in *installer) checkHash(name string, r io.Reader, size int64) error {
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.LimitReader(r, size+1), in.bufs[0])
	if err != nil {
		return fmt.Errorf("reading back %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("%s reads back as %d bytes, want %d", name, n, size)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), in.payload(name).SHA256; got != want {
		return fmt.Errorf("%s reads back with sha256 %s, the manifest says %s", name, got, want)
	}
	return nil
}

// ukiRootHash returns abboot.roothash from a UKI's command line
// (uki.ReadCmdline), "" when it has none or no .cmdline.
func ukiRootHash(r io.ReaderAt) (string, error) {
	c, err := uki.ReadCmdline(r)
	if err != nil {
		return "", fmt.Errorf("the UKI's command line: %w", err)
	}
	p, err := bootparam.Parse(c)
	if err != nil {
		return "", fmt.Errorf("the UKI's command line: %w", err)
	}
	return p.RootHash, nil
}
