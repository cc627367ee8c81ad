package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"slices"
)

// Reader reads a bundle in one pass, as it streams in.
type Reader struct {
	// Manifest is the verified manifest.
	Manifest Manifest

	r       io.Reader
	pre     []byte         // the header, manifest and signature as read
	header  int64          // bytes before the first payload
	next    int            // index of the next payload in Manifest.Payloads
	cur     *payloadReader // the payload handed out last, if any
	vouched map[string]bool
	err     error // sticky: once the stream is bad, it stays bad
}

// NewReader reads the header, manifest and signature from r, checks the
// signature with keys, checks the manifest and then calls check (the
// installer's policy, e.g. Policy; nil for none). Only when all of that
// passed does it return a Reader, so no payload byte is ever handed out
// from an unverified or refused bundle.
func NewReader(r io.Reader, keys Keyring, check func(Manifest) error) (*Reader, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys are trusted", ErrUnknownKey)
	}
	var hdr [headerSize]byte
	if err := readFull(r, hdr[:], "the header"); err != nil {
		return nil, err
	}
	if string(hdr[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("%w: magic %q, want %q: not an abboot bundle", ErrBadHeader, hdr[:len(Magic)], Magic)
	}
	if v := binary.BigEndian.Uint32(hdr[8:]); v != FormatVersion {
		return nil, fmt.Errorf("%w: format version %d, this reader knows %d", ErrBadHeader, v, FormatVersion)
	}
	n := binary.BigEndian.Uint32(hdr[12:])
	if n == 0 || n > MaxManifestSize {
		return nil, badManifest("length %d is not 1 to %d bytes", n, MaxManifestSize)
	}
	raw := make([]byte, n)
	if err := readFull(r, raw, "the manifest"); err != nil {
		return nil, err
	}
	sig := make([]byte, ed25519.SignatureSize)
	if err := readFull(r, sig, "the signature"); err != nil {
		return nil, err
	}
	key, err := keys.verify(raw, sig)
	if err != nil {
		return nil, err
	}
	m, err := parseManifest(raw)
	if err != nil {
		return nil, err
	}
	if id := KeyID(key); m.KeyID != id {
		return nil, badManifest("key_id %s, but it was signed by key %s", m.KeyID, id)
	}
	if check != nil {
		if err := check(m); err != nil {
			return nil, err
		}
	}
	pre := slices.Concat(hdr[:], raw, sig)
	return &Reader{Manifest: m, r: r, pre: pre, header: int64(len(pre))}, nil
}

// Spool copies the rest of the bundle from r's stream into f, an empty
// file, so that f holds the whole bundle (the header, manifest and
// signature r read, then the payloads), and has r read the payloads from
// f from then on. It is for a stream that must be read at random before
// it is installed: under Secure Boot the UKI, which comes last, is checked
// before anything is written (PeekUKI(f)). A stream that ends before the
// last payload's end, or goes on after it, is refused here; the payloads'
// hashes are checked as Next hands them out, as ever. No payload may have
// been handed out yet.
func (r *Reader) Spool(f *os.File) error {
	if r.err != nil {
		return r.err
	}
	if r.next > 0 {
		return errors.New("spooling a bundle whose payloads are being read")
	}
	size := r.Offset(len(r.Manifest.Payloads))
	if _, err := f.Write(r.pre); err != nil {
		return fmt.Errorf("spooling the bundle: %w", err)
	}
	switch n, err := io.Copy(f, io.LimitReader(r.r, size-r.header+1)); {
	case err != nil:
		return fmt.Errorf("spooling the bundle: %w", err)
	case r.header+n < size:
		return fmt.Errorf("%w: %d of its %d bytes", ErrTruncated, r.header+n, size)
	case r.header+n > size:
		return ErrTrailingData
	}
	r.r = io.NewSectionReader(f, r.header, size-r.header)
	return nil
}

// PeekUKI reads the UKI payload out of ra, the bundle r is reading opened
// for random access (a local file, a spooled one, an HTTP server by
// range), and checks it against the manifest's
// size and sha256: it is then the very UKI the installer will write, and
// can be checked before anything is (docs/design.md, Secure Boot). r's
// own stream is not touched.
func (r *Reader) PeekUKI(ra io.ReaderAt) ([]byte, error) {
	for i, p := range r.Manifest.Payloads {
		if p.Name != PayloadUKI {
			continue
		}
		b := make([]byte, p.Size)
		switch n, err := ra.ReadAt(b, r.Offset(i)); {
		case n == len(b):
		case err == nil || err == io.EOF:
			return nil, fmt.Errorf("%w: in the UKI payload, after %d of %d bytes", ErrTruncated, n, len(b))
		default:
			return nil, fmt.Errorf("reading the UKI payload: %w", err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != p.SHA256 {
			return nil, fmt.Errorf("%w: UKI payload sha256 %x, manifest says %s", ErrHashMismatch, sum, p.SHA256)
		}
		return b, nil
	}
	return nil, badManifest("no %q payload", PayloadUKI)
}

// parseManifest decodes and validates a manifest. Unknown fields are an
// error: a manifest that needs more than this reader understands must say
// so with a new format version.
func parseManifest(raw []byte) (Manifest, error) {
	var m Manifest
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return m, badManifest("%v", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return m, badManifest("data after the JSON object")
	}
	return m, m.validate()
}

// claimedKeyID returns the key_id an unverified manifest claims, or "" if
// it claims none that could be a key ID.
func claimedKeyID(raw []byte) string {
	var m struct {
		KeyID string `json:"key_id"`
	}
	if json.Unmarshal(raw, &m) != nil || !isHex(m.KeyID, keyIDSize) {
		return ""
	}
	return m.KeyID
}

// Offset returns the byte offset in the bundle of payload i of the
// manifest, so that a payload can be fetched by range (RFC 9110 §14)
// instead of streamed.
func (r *Reader) Offset(i int) int64 {
	off := r.header
	for _, p := range r.Manifest.Payloads[:i] {
		off += p.Size
	}
	return off
}

// Next returns the next payload in manifest order and a reader of its
// bytes. The reader yields exactly p.Size bytes, hashing them as they
// pass; where it would return io.EOF it returns an error wrapping
// ErrHashMismatch if they do not match the manifest, so read it to io.EOF
// (io.Copy does) before trusting what was written.
//
// A payload that was not read to its end is read and checked by the next
// call. After the last payload Next returns io.EOF, and only then, when
// every payload matched and nothing follows, is the whole bundle known to
// be good; trailing data is ErrTrailingData. Errors are sticky.
func (r *Reader) Next() (Payload, io.Reader, error) {
	if r.err != nil {
		return Payload{}, nil, r.err
	}
	if r.cur != nil {
		if _, err := io.Copy(io.Discard, r.cur); err != nil {
			r.err = err
			return Payload{}, nil, err
		}
		r.cur = nil
	}
	if r.next == len(r.Manifest.Payloads) {
		var b [1]byte
		switch _, err := io.ReadFull(r.r, b[:]); {
		case err == nil:
			r.err = ErrTrailingData
		case err == io.EOF:
			r.err = io.EOF
		default:
			r.err = fmt.Errorf("reading after the last payload: %w", err)
		}
		return Payload{}, nil, r.err
	}
	p := r.Manifest.Payloads[r.next]
	r.next++
	r.cur = &payloadReader{p: p, r: r.r, left: p.Size}
	if !r.vouched[p.Name] {
		r.cur.h = sha256.New()
	}
	return p, r.cur, nil
}

// Vouch tells r that the caller checks payload name, not yet handed out,
// against the signed manifest in another way, as strong and before a
// byte of it is handed on: a delta install checks each root block
// against the verity tree's leaves, and the leaves against the
// manifest's root hash (pkg/delta). Next then does not hash it a second
// time; its size is still enforced. Hashing 4 KiB blocks and then the
// whole again would cost a delta install a second pass over the image.
func (r *Reader) Vouch(name string) {
	if r.vouched == nil {
		r.vouched = map[string]bool{}
	}
	r.vouched[name] = true
}

// payloadReader reads one payload and checks its hash at its end.
type payloadReader struct {
	p    Payload
	r    io.Reader
	left int64
	h    hash.Hash // nil when vouched for
	err  error     // sticky; io.EOF once the payload was read and matched
}

func (pr *payloadReader) Read(b []byte) (int, error) {
	if pr.err != nil {
		return 0, pr.err
	}
	if pr.left == 0 {
		pr.err = io.EOF
		if pr.h == nil {
			return 0, pr.err
		}
		if got := hex.EncodeToString(pr.h.Sum(nil)); got != pr.p.SHA256 {
			pr.err = fmt.Errorf("%w: %s has sha256 %s, the manifest says %s", ErrHashMismatch, pr.p.Name, got, pr.p.SHA256)
		}
		return 0, pr.err
	}
	if int64(len(b)) > pr.left {
		b = b[:pr.left]
	}
	n, err := pr.r.Read(b)
	if pr.h != nil {
		pr.h.Write(b[:n])
	}
	pr.left -= int64(n)
	switch {
	case err == nil || (err == io.EOF && pr.left == 0):
		return n, nil
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
		pr.err = fmt.Errorf("%w: in payload %s, after %d of %d bytes", ErrTruncated, pr.p.Name, pr.p.Size-pr.left, pr.p.Size)
	default:
		pr.err = fmt.Errorf("reading payload %s: %w", pr.p.Name, err)
	}
	return n, pr.err
}

// readFull reads exactly len(b) bytes of the part of the bundle named
// what.
func readFull(r io.Reader, b []byte, what string) error {
	n, err := io.ReadFull(r, b)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: in %s, after %d of %d bytes", ErrTruncated, what, n, len(b))
	}
	return fmt.Errorf("reading %s of the bundle: %w", what, err)
}
