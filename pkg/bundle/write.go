package bundle

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// Write writes a bundle of the files in payloads (payload name to file
// name) to w, signed with key. From m it takes Version, Compatible,
// Created and RootHash; it fills in Format, KeyID and Payloads (in the
// order root, verity, uki) itself. It reads each file twice, to hash it
// and then to copy it, and fails if a file changed in between.
func Write(w io.Writer, m Manifest, payloads map[string]string, key ed25519.PrivateKey) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("signing key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	for name := range payloads {
		if err := checkName(name); err != nil {
			return err
		}
	}
	m.Format = FormatVersion
	m.KeyID = KeyID(key.Public().(ed25519.PublicKey))
	m.Payloads = nil
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, name := range payloadOrder {
		path, ok := payloads[name]
		if !ok {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("payload %s: %w", name, err)
		}
		files = append(files, f)
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return fmt.Errorf("hashing payload %s: %w", name, err)
		}
		m.Payloads = append(m.Payloads, Payload{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
	}
	if err := m.validate(); err != nil {
		return err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding manifest: %w", err)
	}
	pre, err := preamble(raw, key)
	if err != nil {
		return err
	}
	if _, err := w.Write(pre); err != nil {
		return fmt.Errorf("writing bundle: %w", err)
	}
	for i, p := range m.Payloads {
		if err := copyPayload(w, files[i], p); err != nil {
			return err
		}
	}
	return nil
}

// preamble returns the header, manifest and signature.
func preamble(manifest []byte, key ed25519.PrivateKey) ([]byte, error) {
	if len(manifest) > MaxManifestSize {
		return nil, badManifest("%d bytes, more than %d", len(manifest), MaxManifestSize)
	}
	b := slices.Concat([]byte(Magic), make([]byte, 8), manifest)
	binary.BigEndian.PutUint32(b[8:], FormatVersion)
	binary.BigEndian.PutUint32(b[12:], uint32(len(manifest)))
	return append(b, ed25519.Sign(key, signedMessage(manifest))...), nil
}

// copyPayload copies p from f, from its start, to w and checks that it is
// still what was hashed.
func copyPayload(w io.Writer, f *os.File, p Payload) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("payload %s: %w", p.Name, err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(w, h), f, p.Size); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("payload %s: %s shrank while it was being bundled", p.Name, f.Name())
		}
		return fmt.Errorf("writing payload %s: %w", p.Name, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != p.SHA256 {
		return fmt.Errorf("payload %s: %s changed while it was being bundled", p.Name, f.Name())
	}
	return nil
}
