package secureboot

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/abboot/abboot/pkg/guid"
	"github.com/foxboron/go-uefi/authenticode"
)

// Owner is the SignatureOwner GUID abboot writes into the signature lists
// it enrolls (UEFI 2.10 §32.4.1: an agent's identifier, not checked by
// firmware).
var Owner = guid.MustParse("7f3d1c4e-5a0b-4e61-9d2b-61626f6f7421")

// Key is a certificate and its private key.
type Key struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
}

// KeySet is the owner's Secure Boot hierarchy (UEFI 2.10 §32.3): PK signs
// KEK updates, KEK signs db updates, db signs images.
type KeySet struct {
	PK, KEK, DB Key
}

// keyNames are the file stems of a key set directory.
var keyNames = [3]string{"PK", "KEK", "db"}

func (ks *KeySet) keys() [3]*Key { return [3]*Key{&ks.PK, &ks.KEK, &ks.DB} }

// GenerateKeySet makes three self-signed RSA-2048 certificates named
// "NAME PK", "NAME KEK" and "NAME db". RSA-2048 is what every firmware and
// the kernel's kexec check accept (UEFI 2.10 §32.6.3 requires RSA-2048
// support; larger keys are optional). Each certificate is valid for 20
// years; firmware does not check dates.
func GenerateKeySet(name string) (*KeySet, error) {
	ks := &KeySet{}
	for i, k := range ks.keys() {
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			return nil, err
		}
		now := time.Now()
		tmpl := &x509.Certificate{
			SerialNumber:          serial,
			Subject:               pkix.Name{CommonName: name + " " + keyNames[i]},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.AddDate(20, 0, 0),
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
		if err != nil {
			return nil, err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		*k = Key{Cert: cert, Signer: priv}
	}
	return ks, nil
}

// File is one file of a key set directory.
type File struct {
	Name string // PK.key, PK.pem, KEK.key, ...
	Data []byte
	Mode os.FileMode
}

// Files returns the set as the files LoadKeySet reads, sbctl's names:
// NAME.key (PEM PKCS#8 private key, 0600) and NAME.pem (PEM certificate),
// and the signed updates that enroll it, NAME.auth, which LoadUpdates
// reads.
func (ks *KeySet) Files() ([]File, error) {
	us, err := ks.Updates()
	if err != nil {
		return nil, err
	}
	var files []File
	for _, u := range us {
		files = append(files, File{u.Name + ".auth", u.Data, 0o644})
	}
	for i, k := range ks.keys() {
		der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
		if err != nil {
			return nil, err
		}
		files = append(files,
			File{keyNames[i] + ".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600},
			File{keyNames[i] + ".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Cert.Raw}), 0o644})
	}
	return files, nil
}

// LoadKeySet reads a set written by WriteFiles.
func LoadKeySet(dir string) (*KeySet, error) {
	ks := &KeySet{}
	for i, k := range ks.keys() {
		cert, err := LoadCert(filepath.Join(dir, keyNames[i]+".pem"))
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, keyNames[i]+".key")
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: no PEM block", p)
		}
		priv, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		s, ok := priv.(crypto.Signer)
		if !ok || !publicKeyEqual(s.Public(), cert.PublicKey) {
			return nil, fmt.Errorf("%s: not the private key of %s.pem", p, keyNames[i])
		}
		*k = Key{Cert: cert, Signer: s}
	}
	return ks, nil
}

// LoadUpdates reads the db.auth, KEK.auth and PK.auth files of a key set
// directory, in enrollOrder.
func LoadUpdates(dir string) ([]Update, error) {
	var us []Update
	for _, e := range enrollOrder {
		b, err := os.ReadFile(filepath.Join(dir, e.v.Name+".auth"))
		if err != nil {
			return nil, err
		}
		us = append(us, Update{Name: e.v.Name, Data: b})
	}
	return us, nil
}

// LoadCert reads a PEM or DER certificate file.
func LoadCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// Sign returns the PE image signed by k alone: any signature already
// there is removed first (Unsigned), so that k's signature is the first,
// which is the one the kernel's kexec_file_load checks.
func Sign(b []byte, k Key) ([]byte, error) {
	if _, ok := k.Signer.(*rsa.PrivateKey); !ok {
		// go-uefi's PKCS#7 writer names the algorithm rsaEncryption.
		return nil, errors.New("signing needs an RSA key")
	}
	b, err := Unsigned(b)
	if err != nil {
		return nil, err
	}
	return appendSignature(b, k)
}

// appendSignature adds k's signature after those already in the image.
func appendSignature(b []byte, k Key) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	p, err := authenticode.Parse(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if _, err := p.Sign(k.Signer, k.Cert); err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return p.Bytes(), nil
}
