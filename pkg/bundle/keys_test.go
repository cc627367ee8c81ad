package bundle

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func mustPEM(t *testing.T, k ed25519.PrivateKey) []byte {
	t.Helper()
	b, err := MarshalPublicKey(pub(k))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseKeys(t *testing.T) {
	k1, k2 := mustPEM(t, testKey(1)), mustPEM(t, testKey(2))
	priv, err := MarshalPrivateKey(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecDER})
	broken := bytes.Replace(k2, []byte("-----END PUBLIC KEY-----"), []byte("-----END PUBLIC KEX-----"), 1)

	good := cat(k1, []byte("build key 2025, rotated in image 7\n"), k2)
	keys, err := ParseKeys(good)
	if err != nil || len(keys) != 2 || KeyID(keys[0]) != KeyID(pub(testKey(1))) || KeyID(keys[1]) != KeyID(pub(testKey(2))) {
		t.Fatalf("ParseKeys of two keys: %v, %d keys", err, len(keys))
	}
	for _, tt := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no public keys"},
		{"text only", []byte("hello\n"), "no public keys"},
		{"private key", cat(k1, priv), `"PRIVATE KEY"`},
		{"ecdsa key", cat(k1, ecPEM), "want an Ed25519 key"},
		{"malformed block in the middle", cat(k1, broken, k1), "1 of 3 PEM blocks are malformed"},
		{"malformed last block", cat(k1, broken), "1 of 2 PEM blocks are malformed"},
	} {
		if _, err := ParseKeys(tt.data); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ParseKeys: %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestPrivateKeyRoundTrip(t *testing.T) {
	b, err := MarshalPrivateKey(testKey(3))
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePrivateKey(b)
	if err != nil || !bytes.Equal(k, testKey(3)) {
		t.Fatalf("ParsePrivateKey: %v, equal %v", err, bytes.Equal(k, testKey(3)))
	}
	if _, err := ParsePrivateKey(mustPEM(t, testKey(3))); err == nil || !strings.Contains(err.Error(), `"PUBLIC KEY"`) {
		t.Errorf("ParsePrivateKey of a public key: %v", err)
	}
	if _, err := ParsePrivateKey(append(b, b...)); err == nil {
		t.Error("ParsePrivateKey took two keys")
	}
}

// TestLoadErrors: a missing file and a file of the wrong kind of key are
// refused with errors that say which file and what it was to hold.
func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	pubPath, keyPath := filepath.Join(dir, "k.pub"), filepath.Join(dir, "k.key")
	priv, err := MarshalPrivateKey(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, mustPEM(t, testKey(1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	loadKeys := func(path string) error { _, err := LoadKeys(path); return err }
	loadPrivate := func(path string) error { _, err := LoadPrivateKey(path); return err }
	for _, tt := range []struct {
		name string
		load func(string) error
		path string
		want string
	}{
		{"trust file missing", loadKeys, missing, "reading trusted keys: "},
		{"private key as trust file", loadKeys, keyPath, "trusted keys " + keyPath + ": "},
		{"signing key missing", loadPrivate, missing, "reading signing key: "},
		{"public key to sign", loadPrivate, pubPath, "signing key " + pubPath + ": "},
	} {
		err := tt.load(tt.path)
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error starting %q", tt.name, err, tt.want)
		}
		if tt.path == missing && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v does not wrap fs.ErrNotExist", tt.name, err)
		}
	}
}

// TestOpenSSL checks the key files and the signature against OpenSSL: a
// key from `openssl genpkey` signs bundles, its public half as `openssl
// pkey -pubout` writes it is what MarshalPublicKey writes, and OpenSSL
// verifies and reproduces the manifest signature.
func TestOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: apt-get install openssl")
	}
	dir := t.TempDir()
	run := func(args ...string) []byte {
		t.Helper()
		out, err := exec.Command("openssl", args...).Output()
		if err != nil {
			t.Fatalf("openssl %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	keyPath, pubPath := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	run("genpkey", "-algorithm", "ed25519", "-out", keyPath)
	run("pkey", "-in", keyPath, "-pubout", "-out", pubPath)
	key, err := LoadPrivateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustPEM(t, key); !bytes.Equal(got, want) {
		t.Fatalf("MarshalPublicKey:\n%s\nopenssl pkey -pubout:\n%s", got, want)
	}
	keys, err := LoadKeys(pubPath)
	if err != nil {
		t.Fatal(err)
	}

	b := writeBundle(t, dir, testManifest(false), testPayloads(PayloadUKI), key)
	if _, err := NewReader(bytes.NewReader(b), keys, nil); err != nil {
		t.Fatal(err)
	}
	n := int(binary.BigEndian.Uint32(b[12:]))
	msg, sig := filepath.Join(dir, "msg"), filepath.Join(dir, "sig")
	os.WriteFile(msg, signedMessage(b[16:16+n]), 0o644)
	os.WriteFile(sig, b[16+n:16+n+64], 0o644)
	if out := run("pkeyutl", "-verify", "-pubin", "-inkey", pubPath, "-rawin", "-in", msg, "-sigfile", sig); !strings.Contains(string(out), "Signature Verified Successfully") {
		t.Fatalf("openssl pkeyutl -verify: %s", out)
	}
	if out := run("pkeyutl", "-sign", "-inkey", keyPath, "-rawin", "-in", msg); !bytes.Equal(out, b[16+n:16+n+64]) {
		t.Fatal("openssl's signature of the manifest differs from the bundle's")
	}
}
