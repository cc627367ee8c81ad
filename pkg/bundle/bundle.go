// Package bundle reads and writes abboot update bundles: one file that
// carries what goes into a slot (the UKI, and for layouts with a root
// partition the root image and its verity tree) with a manifest signed by
// an ed25519 key that the device trusts.
//
// A bundle is laid out so that it can be installed while it streams in,
// in one pass and without buffering: everything needed to decide whether
// to install it comes first, and the payloads follow in the order they are
// written to the slot. All integers are big-endian:
//
//	offset   size  content
//	0        8     magic "ABBUNDLE"
//	8        4     format version (1)
//	12       4     manifest length N, 1..MaxManifestSize
//	16       N     manifest, JSON (see Manifest)
//	16+N     64    ed25519 signature (RFC 8032, pure Ed25519) of
//	               "abboot bundle manifest v1\x00" followed by the N
//	               manifest bytes
//	80+N     ...   the payloads, back to back, in manifest order, each
//	               exactly its declared size
//
// Nothing follows the last payload. The prefix of the signed message keeps
// a signature made for something else with the same key from passing as a
// manifest signature. The header is not signed; the manifest repeats the
// format version, and the two must agree.
//
// The manifest names each payload with its size and sha256, so the
// signature covers every byte of the bundle. The payloads come in the
// order of docs/design.md rule 6: root, then verity, then the UKI (the entry
// point) last; a manifest with another order is refused. The UKI is always
// there; the root, its verity tree and the root hash come all together or
// not at all (an ESP-only layout has none of them).
//
// Reader checks the signature against a Keyring before it parses the
// manifest, checks the manifest, and runs the installer's policy (see
// Policy) before it hands out a single payload byte; each payload is
// hashed as it passes, and a mismatch is an error at its end, before the
// installer commits it. Write makes a bundle.
//
// Keys are PEM: the private key is PKCS#8 ("PRIVATE KEY") and the public
// key PKIX ("PUBLIC KEY"), what `openssl genpkey -algorithm ed25519` and
// `openssl pkey -pubout` write, so either tool can make them. A trust file
// is any number of public keys concatenated. A key is named by its key ID:
// the first 8 bytes of the sha256 of its 32-byte public key, in hex.
//
// Versions are dot-separated non-negative decimal numbers compared
// component by component as numbers (see CompareVersions).
//
// The package does not download bundles, write slots or decide which slot
// to install into; the installer (abctl install) does that. It does not
// compress payloads or support key revocation other than by removing a key
// from the trust file of the next image.
package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Magic opens every bundle.
const Magic = "ABBUNDLE"

// FormatVersion is the only format this package reads and writes.
const FormatVersion = 1

// MaxManifestSize bounds the manifest, which is read into memory before
// its signature is checked. Real manifests are a few hundred bytes.
const MaxManifestSize = 64 << 10

// headerSize is the magic, format version and manifest length.
const headerSize = len(Magic) + 4 + 4

// signaturePrefix is prepended to the manifest to form the signed message.
const signaturePrefix = "abboot bundle manifest v1\x00"

// Payload names. They name what is written, not a file: the installer
// maps them onto the inactive slot's partitions and ESP file.
const (
	PayloadRoot   = "root"   // the root filesystem image
	PayloadVerity = "verity" // its veritysetup hash tree, with superblock
	PayloadUKI    = "uki"    // the unified kernel image
)

// payloadOrder is the only order payloads may appear in: the UKI, which
// makes the slot bootable, last (docs/design.md rule 6).
var payloadOrder = []string{PayloadRoot, PayloadVerity, PayloadUKI}

// Errors. Each error from this package wraps one of these and reads as
// one line.
var (
	ErrBadHeader    = errors.New("bad bundle header")
	ErrBadManifest  = errors.New("bad bundle manifest")
	ErrBadSignature = errors.New("bad bundle signature")
	ErrUnknownKey   = errors.New("bundle signed by an unknown key")
	ErrTruncated    = errors.New("bundle truncated")
	ErrHashMismatch = errors.New("payload hash mismatch")
	ErrTrailingData = errors.New("trailing data after the last payload")
	// Refusals of Policy.
	ErrIncompatible = errors.New("incompatible bundle")
	ErrDowngrade    = errors.New("downgrade refused")
	ErrTooLarge     = errors.New("payload larger than its slot")
)

// Manifest describes a bundle. It is what the signature covers.
type Manifest struct {
	Format  int    `json:"format"`  // FormatVersion
	Version string `json:"version"` // the OS version it installs, e.g. "2"
	// Compatible names the systems it is for, e.g. "abboot-demo-x86_64";
	// letters, digits and ._+- only.
	Compatible string    `json:"compatible"`
	Created    string    `json:"created,omitempty"`  // RFC 3339; informational
	KeyID      string    `json:"key_id"`             // KeyID of the signing key
	RootHash   string    `json:"roothash,omitempty"` // hex verity root hash of the root payload
	Payloads   []Payload `json:"payloads"`
}

// Payload is one member of a bundle.
type Payload struct {
	Name   string `json:"name"` // PayloadRoot, PayloadVerity or PayloadUKI
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex
}

func badManifest(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadManifest, fmt.Sprintf(format, a...))
}

// checkName refuses a payload name that is not one of the known ones,
// saying what is wrong with it. Names with "/" or ".." can never be known
// names; they are called out because a careless installer that used them
// as file names would write outside its directory.
func checkName(name string) error {
	switch {
	case name == "":
		return badManifest("a payload has an empty name")
	case strings.Contains(name, "/"):
		return badManifest("payload name %q contains \"/\"", name)
	case strings.Contains(name, ".."):
		return badManifest("payload name %q contains \"..\"", name)
	}
	if slices.Contains(payloadOrder, name) {
		return nil
	}
	return badManifest("unknown payload %q (want %s)", name, strings.Join(payloadOrder, ", "))
}

// isHex reports whether s is n bytes in lower-case hex.
func isHex(s string, n int) bool {
	if len(s) != 2*n || strings.ToLower(s) != s {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// validCompatible reports whether s is a usable compatible string.
func validCompatible(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._+-", c)) {
			return false
		}
	}
	return true
}

// validate checks everything about m that does not depend on the key or
// the installer's policy.
func (m *Manifest) validate() error {
	if m.Format != FormatVersion {
		return badManifest("format %d, want %d", m.Format, FormatVersion)
	}
	if _, err := parseVersion(m.Version); err != nil {
		return badManifest("%v", err)
	}
	if !validCompatible(m.Compatible) {
		return badManifest("compatible string %q is not 1 to 64 of [A-Za-z0-9._+-]", m.Compatible)
	}
	if m.Created != "" {
		if _, err := time.Parse(time.RFC3339, m.Created); err != nil {
			return badManifest("created %q is not an RFC 3339 time", m.Created)
		}
	}
	if !isHex(m.KeyID, keyIDSize) {
		return badManifest("key_id %q is not %d lower-case hex digits", m.KeyID, 2*keyIDSize)
	}
	if m.RootHash != "" && !isHex(m.RootHash, sha256.Size) {
		return badManifest("roothash %q is not %d lower-case hex digits", m.RootHash, 2*sha256.Size)
	}
	next := 0 // index into payloadOrder of the next allowed name
	seen := map[string]bool{}
	for _, p := range m.Payloads {
		if err := checkName(p.Name); err != nil {
			return err
		}
		if seen[p.Name] {
			return badManifest("payload %q is listed twice", p.Name)
		}
		seen[p.Name] = true
		i := slices.Index(payloadOrder, p.Name)
		if i < next {
			return badManifest("payload %q comes after %q; the order is %s", p.Name, payloadOrder[next-1], strings.Join(payloadOrder, ", "))
		}
		next = i + 1
		if p.Size <= 0 {
			return badManifest("payload %q has size %d", p.Name, p.Size)
		}
		if !isHex(p.SHA256, sha256.Size) {
			return badManifest("payload %q: sha256 %q is not %d lower-case hex digits", p.Name, p.SHA256, 2*sha256.Size)
		}
	}
	if !seen[PayloadUKI] {
		return badManifest("no %q payload", PayloadUKI)
	}
	// A root needs its tree and its hash; either without the root is
	// meaningless.
	parts := map[string]bool{"root payload": seen[PayloadRoot], "verity payload": seen[PayloadVerity], "roothash": m.RootHash != ""}
	var have, lack []string
	for _, k := range slices.Sorted(maps.Keys(parts)) {
		if parts[k] {
			have = append(have, k)
		} else {
			lack = append(lack, k)
		}
	}
	if len(have) > 0 && len(lack) > 0 {
		return badManifest("%s without %s (they come together or not at all)", strings.Join(have, " and "), strings.Join(lack, " and "))
	}
	return nil
}
