package secureboot

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"

	"github.com/abboot/abboot/pkg/guid"
)

// Signature types this package reads from an EFI_SIGNATURE_LIST (UEFI 2.10
// §32.4.1). Other types (SHA-1, RSA-2048 keys, SHA-384/512 hashes, ...) are
// skipped: abboot's keys are X.509 and its images are hashed with SHA-256.
var (
	certSHA256     = guid.MustParse("c1c41626-504c-4092-aca9-41f936934328") // EFI_CERT_SHA256_GUID
	certX509       = guid.MustParse("a5c059a1-94e4-4aa7-87b5-ab155c2bf072") // EFI_CERT_X509_GUID
	certX509SHA256 = guid.MustParse("3bd2a492-96c0-4079-b420-fcf98ef103ed") // EFI_CERT_X509_SHA256_GUID
)

// sigListHeader is EFI_SIGNATURE_LIST without its variable parts.
const sigListHeader = 16 + 4 + 4 + 4

// Database is the content of a signature database variable (db, dbx, KEK,
// PK): the certificates and hashes it holds.
type Database struct {
	// Certs are the EFI_CERT_X509_GUID entries.
	Certs []*x509.Certificate
	// Hashes are the EFI_CERT_SHA256_GUID entries: Authenticode digests
	// of images.
	Hashes [][sha256.Size]byte
	// CertHashes are the EFI_CERT_X509_SHA256_GUID entries: SHA-256 of a
	// certificate's TBSCertificate (only meaningful in dbx).
	CertHashes [][sha256.Size]byte
}

// ParseDatabase parses a sequence of EFI_SIGNATURE_LISTs, each
//
//	SignatureType (GUID) | SignatureListSize | SignatureHeaderSize | SignatureSize
//	| SignatureHeader | SignatureSize-byte EFI_SIGNATURE_DATA (owner GUID, data)...
//
// Every size is checked against the bytes that are there; an X.509 entry that
// does not parse is an error, because skipping it could drop a dbx entry.
func ParseDatabase(b []byte) (*Database, error) {
	db := &Database{}
	for off := 0; off < len(b); {
		if len(b)-off < sigListHeader {
			return nil, fmt.Errorf("signature list at %d: %d bytes left, shorter than its header", off, len(b)-off)
		}
		typ := guid.GUID(b[off : off+16])
		listSize := binary.LittleEndian.Uint32(b[off+16:])
		hdrSize := binary.LittleEndian.Uint32(b[off+20:])
		sigSize := binary.LittleEndian.Uint32(b[off+24:])
		if uint64(listSize) > uint64(len(b)-off) || uint64(listSize) < uint64(sigListHeader)+uint64(hdrSize) {
			return nil, fmt.Errorf("signature list at %d: size %d does not fit (header %d, %d bytes left)", off, listSize, hdrSize, len(b)-off)
		}
		body := b[off+sigListHeader+int(hdrSize) : off+int(listSize)]
		if sigSize < 16 || len(body)%int(sigSize) != 0 {
			return nil, fmt.Errorf("signature list at %d: %d bytes of entries are not a multiple of the entry size %d (at least 16)", off, len(body), sigSize)
		}
		for e := 0; e < len(body); e += int(sigSize) {
			data := body[e+16 : e+int(sigSize)] // after the owner GUID
			if err := db.add(typ, data); err != nil {
				return nil, fmt.Errorf("signature list at %d, entry %d: %w", off, e/int(sigSize), err)
			}
		}
		off += int(listSize)
	}
	return db, nil
}

func (db *Database) add(typ guid.GUID, data []byte) error {
	switch typ {
	case certX509:
		c, err := x509.ParseCertificate(data)
		if err != nil {
			return fmt.Errorf("X.509 entry: %w", err)
		}
		db.Certs = append(db.Certs, c)
	case certSHA256:
		if len(data) != sha256.Size {
			return fmt.Errorf("SHA-256 entry of %d bytes", len(data))
		}
		db.Hashes = append(db.Hashes, [sha256.Size]byte(data))
	case certX509SHA256:
		// EFI_CERT_X509_SHA256: the hash, then an EFI_TIME of revocation.
		if len(data) < sha256.Size {
			return fmt.Errorf("X.509 SHA-256 entry of %d bytes", len(data))
		}
		db.CertHashes = append(db.CertHashes, [sha256.Size]byte(data[:sha256.Size]))
	}
	return nil
}

// hasHash reports whether h is one of the database's image hashes.
func (db *Database) hasHash(h [sha256.Size]byte) bool {
	for _, x := range db.Hashes {
		if x == h {
			return true
		}
	}
	return false
}

// hasCert reports whether c is in the database, as a certificate or, for
// dbx, by the hash of its TBSCertificate.
func (db *Database) hasCert(c *x509.Certificate) bool {
	for _, x := range db.Certs {
		if bytes.Equal(x.Raw, c.Raw) {
			return true
		}
	}
	tbs := sha256.Sum256(c.RawTBSCertificate)
	for _, x := range db.CertHashes {
		if x == tbs {
			return true
		}
	}
	return false
}

// MarshalCerts encodes certificates as one EFI_SIGNATURE_LIST of
// EFI_CERT_X509_GUID entries per certificate (certificates differ in size,
// and a list's entries share one size), owned by owner.
func MarshalCerts(owner guid.GUID, certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = appendList(b, certX509, owner, c.Raw)
	}
	return b
}

// MarshalHashes encodes Authenticode SHA-256 digests as one
// EFI_SIGNATURE_LIST of EFI_CERT_SHA256_GUID entries, owned by owner.
func MarshalHashes(owner guid.GUID, hashes ...[sha256.Size]byte) []byte {
	if len(hashes) == 0 {
		return nil
	}
	var data []byte
	for _, h := range hashes {
		data = append(data, h[:]...)
	}
	return appendListN(nil, certSHA256, owner, sha256.Size, data)
}

func appendList(b []byte, typ, owner guid.GUID, data []byte) []byte {
	return appendListN(b, typ, owner, len(data), data)
}

// appendListN appends a list of len(data)/size entries of size bytes each.
func appendListN(b []byte, typ, owner guid.GUID, size int, data []byte) []byte {
	n := len(data) / size
	b = append(b, typ[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(sigListHeader+n*(16+size)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(16+size))
	for i := 0; i < n; i++ {
		b = append(b, owner[:]...)
		b = append(b, data[i*size:(i+1)*size]...)
	}
	return b
}
