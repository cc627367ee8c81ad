package secureboot

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"math/big"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/foxboron/go-uefi/authenticode"
)

// testPE returns a minimal PE32+ image: headers and one 512-byte .text
// section of the given byte, enough for debug/pe and Authenticode.
func testPE(fill byte) []byte {
	b := make([]byte, 0x400)
	copy(b, "MZ")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x40)
	copy(b[0x40:], "PE\x00\x00")
	coff := b[0x44:]
	binary.LittleEndian.PutUint16(coff[0:], 0x8664) // Machine: x86-64
	binary.LittleEndian.PutUint16(coff[2:], 1)      // NumberOfSections
	binary.LittleEndian.PutUint16(coff[16:], 240)   // SizeOfOptionalHeader
	binary.LittleEndian.PutUint16(coff[18:], 0x22)  // executable, large address aware
	opt := b[0x58:]
	binary.LittleEndian.PutUint16(opt[0:], 0x20b)   // PE32+
	binary.LittleEndian.PutUint32(opt[32:], 0x1000) // SectionAlignment
	binary.LittleEndian.PutUint32(opt[36:], 0x200)  // FileAlignment
	binary.LittleEndian.PutUint32(opt[56:], 0x2000) // SizeOfImage
	binary.LittleEndian.PutUint32(opt[60:], 0x200)  // SizeOfHeaders
	binary.LittleEndian.PutUint16(opt[68:], 10)     // Subsystem: EFI application
	binary.LittleEndian.PutUint32(opt[108:], 16)    // NumberOfRvaAndSizes
	sec := b[0x58+240:]
	copy(sec, ".text")
	binary.LittleEndian.PutUint32(sec[8:], 0x200)   // VirtualSize
	binary.LittleEndian.PutUint32(sec[12:], 0x1000) // VirtualAddress
	binary.LittleEndian.PutUint32(sec[16:], 0x200)  // SizeOfRawData
	binary.LittleEndian.PutUint32(sec[20:], 0x200)  // PointerToRawData
	for i := 0x200; i < 0x400; i++ {
		b[i] = fill
	}
	return b
}

var (
	keysOnce          sync.Once
	owner, foreign    *KeySet
	caKey, leafKey    Key // db holds caKey; leafKey is issued by it
	testKeysGenerated error
)

func testKeys(t testing.TB) {
	keysOnce.Do(func() {
		if owner, testKeysGenerated = GenerateKeySet("abboot test"); testKeysGenerated != nil {
			return
		}
		if foreign, testKeysGenerated = GenerateKeySet("foreign"); testKeysGenerated != nil {
			return
		}
		caKey = foreign.KEK // a CA (IsCA) that only db trusts, in the chain test
		leafKey, testKeysGenerated = issue(caKey, "leaf")
	})
	if testKeysGenerated != nil {
		t.Fatal(testKeysGenerated)
	}
}

// issue makes a code-signing certificate signed by ca.
func issue(ca Key, name string) (Key, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return Key{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &priv.PublicKey, ca.Signer)
	if err != nil {
		return Key{}, err
	}
	c, err := x509.ParseCertificate(der)
	return Key{Cert: c, Signer: priv}, err
}

func mustSign(t *testing.T, b []byte, keys ...Key) []byte {
	t.Helper()
	b, err := Sign(b, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[1:] {
		if b, err = appendSignature(b, k); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func digestOf(t *testing.T, b []byte) [sha256.Size]byte {
	t.Helper()
	img, err := parsePE(b)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestVerify(t *testing.T) {
	testKeys(t)
	pe := testPE(0xcc)
	signed := mustSign(t, pe, owner.DB)
	db := &Database{Certs: []*x509.Certificate{owner.DB.Cert}}
	flipped := bytes.Clone(signed)
	flipped[0x300] ^= 1 // a byte of .text
	for _, tc := range []struct {
		name    string
		img     []byte
		db, dbx *Database
		want    error // nil: accepted
		sig     int   // the accepted signature
	}{
		{"valid", signed, db, nil, nil, 0},
		{"wrong key", mustSign(t, pe, foreign.DB), db, nil, ErrUntrusted, 0},
		{"signed by KEK, not db", mustSign(t, pe, owner.KEK), db, nil, ErrUntrusted, 0},
		{"unsigned", pe, db, nil, ErrUnsigned, 0},
		{"unsigned, digest in db", pe, &Database{Hashes: [][32]byte{digestOf(t, pe)}}, nil, nil, -1},
		{"changed after signing", flipped, db, nil, ErrUntrusted, 0},
		{"db empty", signed, &Database{}, nil, ErrUntrusted, 0},
		{"signer in dbx", signed, db, &Database{Certs: []*x509.Certificate{owner.DB.Cert}}, ErrForbidden, 0},
		{"signer's TBS hash in dbx", signed, db, &Database{CertHashes: [][32]byte{sha256.Sum256(owner.DB.Cert.RawTBSCertificate)}}, ErrForbidden, 0},
		{"digest in dbx", signed, db, &Database{Hashes: [][32]byte{digestOf(t, signed)}}, ErrForbidden, 0},
		{"two signatures, foreign first", mustSign(t, pe, foreign.DB, owner.DB), db, nil, nil, 1},
		{"two signatures, db first", mustSign(t, pe, owner.DB, foreign.DB), db, nil, nil, 0},
		{"two signatures, the other one's signer in dbx", mustSign(t, pe, owner.DB, foreign.DB), db, &Database{Certs: []*x509.Certificate{foreign.DB.Cert}}, ErrForbidden, 0},
		{"signer issued by a db CA", mustSign(t, pe, leafKey), &Database{Certs: []*x509.Certificate{caKey.Cert}}, nil, nil, 0},
		{"signer issued by a db CA in dbx", mustSign(t, pe, leafKey), &Database{Certs: []*x509.Certificate{caKey.Cert}}, &Database{Certs: []*x509.Certificate{caKey.Cert}}, ErrForbidden, 0},
		{"signed content swapped", swapped(t, signed, testPE(0xdd)), db, nil, ErrUntrusted, 0},
		{"truncated in the signature", signed[:len(signed)-100], db, nil, ErrMalformed, 0},
		{"truncated in the headers", signed[:0x100], db, nil, ErrMalformed, 0},
		{"not a PE", []byte("MZ but nothing else, which is far too short for a PE"), db, nil, ErrMalformed, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Verify(tc.img, tc.db, tc.dbx)
			if !errors.Is(err, tc.want) || (tc.want != nil) != (err != nil) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			if err != nil {
				t.Logf("refused: %v", err)
				return
			}
			if res.Signature != tc.sig {
				t.Errorf("accepted signature %d, want %d", res.Signature, tc.sig)
			}
		})
	}
}

// swapped returns other carrying signed's signature with the signed
// content's digest replaced by other's: a forgery that only the check of
// the messageDigest attribute catches.
func swapped(t *testing.T, signed, other []byte) []byte {
	t.Helper()
	img, err := parsePE(signed)
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := img.signatures()
	if err != nil {
		t.Fatal(err)
	}
	from, to := digestOf(t, signed), digestOf(t, other)
	sig := bytes.Replace(sigs[0], from[:], to[:], 1)
	if bytes.Equal(sig, sigs[0]) {
		t.Fatal("digest not found in the signature")
	}
	p, err := authenticode.Parse(bytes.NewReader(other))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendSignature(sig); err != nil {
		t.Fatal(err)
	}
	return p.Bytes()
}

// TestSignReplaces checks that Sign leaves exactly one signature, the new
// one, as the kernel's kexec check needs (it reads only the first).
func TestSignReplaces(t *testing.T) {
	testKeys(t)
	twice := mustSign(t, mustSign(t, testPE(1), foreign.DB), owner.DB)
	img, err := parsePE(twice)
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := img.signatures()
	if err != nil || len(sigs) != 1 {
		t.Fatalf("%d signatures (%v), want 1", len(sigs), err)
	}
	if _, err := Verify(twice, &Database{Certs: []*x509.Certificate{foreign.DB.Cert}}, nil); !errors.Is(err, ErrUntrusted) {
		t.Errorf("the replaced signature still verifies: %v", err)
	}
	u, err := Unsigned(twice)
	if err != nil || !bytes.Equal(u, testPE(1)) {
		t.Errorf("Unsigned did not restore the image (%v)", err)
	}
}

func TestParseDatabase(t *testing.T) {
	testKeys(t)
	h := sha256.Sum256([]byte("x"))
	b := append(MarshalCerts(Owner, owner.DB.Cert, foreign.DB.Cert), MarshalHashes(Owner, h, h)...)
	db, err := ParseDatabase(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(db.Certs) != 2 || !db.Certs[1].Equal(foreign.DB.Cert) || len(db.Hashes) != 2 || db.Hashes[0] != h {
		t.Fatalf("parsed %d certs, %d hashes", len(db.Certs), len(db.Hashes))
	}
	for _, bad := range [][]byte{
		b[:len(b)-1], // last list cut short
		b[:20],       // header cut short
		append(bytes.Clone(b[:sigListHeader]), 0), // list size says more
	} {
		if _, err := ParseDatabase(bad); err == nil {
			t.Errorf("ParseDatabase(%d bytes) accepted a broken list", len(bad))
		}
	}
	broken := MarshalCerts(Owner, owner.DB.Cert)
	broken[sigListHeader+16] ^= 0xff // the certificate's first byte
	if _, err := ParseDatabase(broken); err == nil {
		t.Error("an X.509 entry that does not parse was skipped")
	}
}

func FuzzParseDatabase(f *testing.F) {
	testKeys(f)
	f.Add(MarshalCerts(Owner, owner.DB.Cert))
	f.Add(MarshalHashes(Owner, sha256.Sum256(nil)))
	f.Fuzz(func(t *testing.T, b []byte) {
		db, err := ParseDatabase(b)
		if err == nil && db == nil {
			t.Fatal("nil database without error")
		}
	})
}

// FuzzVerify feeds Verify arbitrary images; it must return an error or a
// result, never panic, and never accept an image no db key signed.
func FuzzVerify(f *testing.F) {
	testKeys(f)
	pe := testPE(0xcc)
	signed, err := Sign(pe, owner.DB)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pe)
	f.Add(signed)
	db := &Database{Certs: []*x509.Certificate{owner.DB.Cert}}
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := Verify(b, db, nil)
		if err != nil {
			return
		}
		// Accepted: only possible for the seed image's content, since
		// no one else holds the key.
		if res.Signer == nil || !res.Signer.Equal(owner.DB.Cert) {
			t.Fatalf("accepted with signer %v", res.Signer)
		}
		if u, err := Unsigned(b); err != nil || digestOf(t, u) != digestOf(t, pe) {
			t.Fatalf("accepted an image other than the signed one")
		}
	})
}

// BenchmarkVerify verifies a signed 14 MiB image, the size of the demo
// UKI, and reports the throughput (bench/verify.sh measures it in the
// init under QEMU).
func BenchmarkVerify(b *testing.B) {
	testKeys(b)
	stub, err := os.ReadFile("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
	if err != nil {
		b.Skip(err)
	}
	// The stub with 14 MiB appended stands for a UKI: Authenticode hashes
	// data after the last section too.
	img, err := Sign(append(stub, make([]byte, 14<<20)...), owner.DB)
	if err != nil {
		b.Fatal(err)
	}
	db := &Database{Certs: []*x509.Certificate{owner.DB.Cert}}
	b.SetBytes(int64(len(img)))
	for b.Loop() {
		if _, err := Verify(img, db, nil); err != nil {
			b.Fatal(err)
		}
	}
}
