package secureboot

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/foxboron/go-uefi/authenticode"
)

// The attribute certificate table (PE/COFF specification, "The Attribute
// Certificate Table (Image Only)"): WIN_CERTIFICATE entries, each dwLength
// (header included), wRevision, wCertificateType and the certificate,
// 8-byte aligned, at the file offset and size of data directory 4.
const (
	winCertHeader     = 8
	winCertRevision2  = 0x0200
	winCertTypePKCS7  = 0x0002
	maxImageSignature = 1 << 20 // far more than any real Authenticode signature
)

// ErrMalformed is returned (wrapped) for an image that is not a PE/COFF
// image or whose certificate table does not fit in the file.
var ErrMalformed = errors.New("malformed PE image")

// peImage is the little of a PE/COFF image this package needs: where the
// certificate table's data directory entry is and what it says.
type peImage struct {
	raw      []byte
	ddOff    int    // file offset of data directory 4 (Certificate Table)
	certOff  uint32 // the table's file offset, 0 without one
	certSize uint32
}

// parsePE reads the headers by hand, with every offset checked against the
// file, before anything else touches the image (PE/COFF §3: MS-DOS stub
// with e_lfanew at 0x3c, "PE\0\0", COFF header, optional header whose magic
// says PE32 or PE32+).
func parsePE(b []byte) (*peImage, error) {
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return nil, fmt.Errorf("%w: no MZ header", ErrMalformed)
	}
	pe := int(binary.LittleEndian.Uint32(b[0x3c:]))
	opt := pe + 4 + 20
	if pe < 0 || opt+2 > len(b) || string(b[pe:pe+4]) != "PE\x00\x00" {
		return nil, fmt.Errorf("%w: no PE signature", ErrMalformed)
	}
	optSize := int(binary.LittleEndian.Uint16(b[pe+4+16:]))
	var dirs, count int // offset of the data directories, their number field
	switch binary.LittleEndian.Uint16(b[opt:]) {
	case 0x10b: // PE32
		dirs, count = opt+96, opt+92
	case 0x20b: // PE32+
		dirs, count = opt+112, opt+108
	default:
		return nil, fmt.Errorf("%w: unknown optional header magic", ErrMalformed)
	}
	dd := dirs + 4*8
	if dd+8 > opt+optSize || dd+8 > len(b) || binary.LittleEndian.Uint32(b[count:]) < 5 {
		return nil, fmt.Errorf("%w: no certificate table entry in the optional header", ErrMalformed)
	}
	img := &peImage{
		raw:      b,
		ddOff:    dd,
		certOff:  binary.LittleEndian.Uint32(b[dd:]),
		certSize: binary.LittleEndian.Uint32(b[dd+4:]),
	}
	if img.certSize == 0 {
		img.certOff = 0
		return img, nil
	}
	// Authenticode (and the kernel's pefile parser) require the table to
	// be the last thing in the file: everything before it is hashed.
	if img.certOff < uint32(dd) || uint64(img.certOff)+uint64(img.certSize) != uint64(len(b)) {
		return nil, fmt.Errorf("%w: certificate table at %d+%d does not end the %d-byte file", ErrMalformed, img.certOff, img.certSize, len(b))
	}
	return img, nil
}

// signatures returns the PKCS#7 blobs of the certificate table, in order.
func (img *peImage) signatures() ([][]byte, error) {
	t := img.raw[img.certOff : img.certOff+img.certSize]
	var sigs [][]byte
	for off := 0; len(t)-off >= winCertHeader; {
		n := int(binary.LittleEndian.Uint32(t[off:]))
		rev := binary.LittleEndian.Uint16(t[off+4:])
		typ := binary.LittleEndian.Uint16(t[off+6:])
		if n < winCertHeader || n > len(t)-off {
			return nil, fmt.Errorf("%w: certificate %d: length %d does not fit", ErrMalformed, len(sigs), n)
		}
		if rev != winCertRevision2 || typ != winCertTypePKCS7 {
			return nil, fmt.Errorf("%w: certificate %d: revision %#x type %#x, want a PKCS#7 WIN_CERTIFICATE", ErrMalformed, len(sigs), rev, typ)
		}
		if n-winCertHeader > maxImageSignature {
			return nil, fmt.Errorf("%w: certificate %d: %d bytes", ErrMalformed, len(sigs), n)
		}
		sigs = append(sigs, t[off+winCertHeader:off+n])
		off += (n + 7) &^ 7
	}
	return sigs, nil
}

// digest returns the image's Authenticode SHA-256 digest (PE/COFF
// Authenticode specification, "Calculating the PE Image Hash"): the file
// without the checksum, the certificate table's directory entry and the
// table itself. go-uefi computes it; its parser is not hardened against
// every malformed image, so a panic there becomes ErrMalformed (PID 1
// runs this).
func (img *peImage) digest() (d [sha256.Size]byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	p, err := authenticode.Parse(bytes.NewReader(img.raw))
	if err != nil {
		return d, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	h := p.Hash(crypto.SHA256)
	if len(h) != sha256.Size {
		return d, fmt.Errorf("%w: hashing failed", ErrMalformed)
	}
	return [sha256.Size]byte(h), nil
}

// Unsigned returns the image without its certificate table: the table's
// bytes cut off and its data directory entry zeroed. It is how a vendor's
// signature is replaced rather than added to (the kernel's kexec check reads
// only the first signature, linux/crypto/asymmetric_keys/verify_pefile.c).
func Unsigned(b []byte) ([]byte, error) {
	img, err := parsePE(b)
	if err != nil {
		return nil, err
	}
	if img.certOff == 0 {
		return b, nil
	}
	out := append([]byte(nil), b[:img.certOff]...)
	clear(out[img.ddOff : img.ddOff+8])
	return out, nil
}
