package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// keyIDSize is the length in bytes of a key ID.
const keyIDSize = 8

// PEM block types: PKIX public keys and PKCS#8 private keys (RFC 7468
// sections 13 and 10, RFC 8410 for Ed25519).
const (
	pemPublic  = "PUBLIC KEY"
	pemPrivate = "PRIVATE KEY"
)

// Keyring is the set of public keys a device trusts to sign bundles. It
// comes from a file inside the device's own signed image (e.g.
// /etc/abboot/keys.pub in the initramfs), so the trust is as strong as
// the image's own signature.
type Keyring []ed25519.PublicKey

// KeyID names a public key in manifests and messages: the first 8 bytes
// of the sha256 of the 32-byte key, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:keyIDSize])
}

// ParseKeys parses a trust file: one or more PEM "PUBLIC KEY" blocks
// holding Ed25519 keys, as MarshalPublicKey and `openssl pkey -pubout`
// write them, with any text between them (RFC 7468 section 2 allows
// explanatory text). A block that is not an Ed25519 public key, or one
// that is malformed, is an error rather than skipped, so that a damaged
// trust file is noticed when it is built and not when the key is needed.
func ParseKeys(data []byte) (Keyring, error) {
	var keys Keyring
	begins := bytes.Count(data, []byte("-----BEGIN "))
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != pemPublic {
			return nil, fmt.Errorf("PEM block %d is a %q, want %q", len(keys)+1, b.Type, pemPublic)
		}
		k, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", len(keys)+1, err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("PEM block %d is a %T, want an Ed25519 key", len(keys)+1, k)
		}
		keys = append(keys, pub)
	}
	// pem.Decode silently skips a malformed block and goes on with the
	// next one; count the openings to notice.
	if begins != len(keys) {
		return nil, fmt.Errorf("%d of %d PEM blocks are malformed", begins-len(keys), begins)
	}
	if len(keys) == 0 {
		return nil, errors.New("no public keys")
	}
	return keys, nil
}

// LoadKeys reads a trust file (see ParseKeys).
func LoadKeys(path string) (Keyring, error) { return load(path, "trusted keys", ParseKeys) }

// MarshalPublicKey returns pub as a PEM "PUBLIC KEY" block.
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: der}), nil
}

// MarshalPrivateKey returns priv as a PEM PKCS#8 "PRIVATE KEY" block.
func MarshalPrivateKey(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: der}), nil
}

// ParsePrivateKey parses one PEM PKCS#8 Ed25519 private key, as
// MarshalPrivateKey and `openssl genpkey -algorithm ed25519` write it.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	if b.Type != pemPrivate {
		return nil, fmt.Errorf("PEM block is a %q, want %q", b.Type, pemPrivate)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is a %T, want an Ed25519 key", k)
	}
	return priv, nil
}

// LoadPrivateKey reads a private key file (see ParsePrivateKey).
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	return load(path, "signing key", ParsePrivateKey)
}

// load reads the file at path and parses it, naming what it holds in
// the errors.
func load[T any](path, what string, parse func([]byte) (T, error)) (T, error) {
	var zero T
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("reading %s: %w", what, err)
	}
	v, err := parse(data)
	if err != nil {
		return zero, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return v, nil
}

// verify returns the key of keys whose signature sig of manifest is. When
// none is, it tells an unknown key from a bad signature by the key_id the
// manifest claims; that claim is read only to choose the error, since
// nothing in an unverified manifest is trusted.
func (keys Keyring) verify(manifest, sig []byte) (ed25519.PublicKey, error) {
	msg := signedMessage(manifest)
	for _, k := range keys {
		if ed25519.Verify(k, msg, sig) {
			return k, nil
		}
	}
	claimed := claimedKeyID(manifest)
	for _, k := range keys {
		if KeyID(k) == claimed {
			return nil, fmt.Errorf("%w: it does not verify with trusted key %s", ErrBadSignature, claimed)
		}
	}
	if claimed != "" {
		return nil, fmt.Errorf("%w: key %s is not among the %d trusted keys", ErrUnknownKey, claimed, len(keys))
	}
	return nil, fmt.Errorf("%w: it does not verify with any of the %d trusted keys", ErrBadSignature, len(keys))
}

// signedMessage is what the signature covers.
func signedMessage(manifest []byte) []byte {
	return append([]byte(signaturePrefix), manifest...)
}
