// Package guid implements the EFI GUID as UEFI stores it on disk and in
// variables: a 16-byte value whose first three fields are little-endian
// (UEFI 2.10 Appendix A, "EFI GUID Format"). It parses and prints the
// canonical 8-4-4-4-12 text form. It does not generate random GUIDs for
// callers that need RFC 9562 semantics beyond version 4.
package guid

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// GUID is a GUID in EFI on-disk byte order.
type GUID [16]byte

// Zero is the all-zero GUID; GPT uses it as the type of an unused entry.
var Zero GUID

// Parse parses the canonical text form, e.g.
// "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", in either case.
func Parse(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("guid %q: want the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	var b [16]byte
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(b[:], []byte(h)); err != nil {
		return g, fmt.Errorf("guid %q: %w", s, err)
	}
	// The text form is big-endian; the first three fields are stored
	// little-endian.
	g = GUID{b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6]}
	copy(g[8:], b[8:])
	return g, nil
}

// MustParse is Parse for constants; it panics on a malformed literal.
func MustParse(s string) GUID {
	g, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return g
}

// String returns the canonical lower-case text form.
func (g GUID) String() string {
	return fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%x-%x",
		g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8:10], g[10:16])
}

// FromBigEndian converts 16 bytes in text (big-endian, RFC 9562) order,
// such as the first half of a verity root hash, to a GUID whose String is
// the hex of those bytes. The Discoverable Partitions Specification derives
// partition UUIDs from root hashes this way.
func FromBigEndian(b []byte) GUID {
	var g GUID
	copy(g[:], b)
	g[0], g[1], g[2], g[3] = g[3], g[2], g[1], g[0]
	g[4], g[5] = g[5], g[4]
	g[6], g[7] = g[7], g[6]
	return g
}

// New returns a random version 4 GUID.
func New() (GUID, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return GUID{}, fmt.Errorf("generating guid: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	return FromBigEndian(b[:]), nil
}

// IsZero reports whether g is the all-zero GUID.
func (g GUID) IsZero() bool { return g == Zero }
