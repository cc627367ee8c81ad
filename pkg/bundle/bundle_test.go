package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// testKey returns a fixed key; seed tells keys apart.
func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// testPayloads returns fixed pseudo-random payload contents.
func testPayloads(names ...string) map[string][]byte {
	sizes := map[string]int{PayloadRoot: 8192, PayloadVerity: 4096, PayloadUKI: 3001}
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	m := map[string][]byte{}
	for _, n := range names {
		b := make([]byte, sizes[n])
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		m[n] = b
	}
	return m
}

const testRootHash = "5f1c0b2a9e8d7c6b5a49382716051f2e3d4c5b6a79889706a5b4c3d2e1f00112"

// testManifest is what the tests put into Write.
func testManifest(withRoot bool) Manifest {
	m := Manifest{Version: "2", Compatible: "abboot-test", Created: "2025-01-02T03:04:05Z"}
	if withRoot {
		m.RootHash = testRootHash
	}
	return m
}

// writeBundle writes contents to files in dir and bundles them with Write.
func writeBundle(t testing.TB, dir string, m Manifest, contents map[string][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	files := map[string]string{}
	for name, b := range contents {
		files[name] = filepath.Join(dir, name)
		if err := os.WriteFile(files[name], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := Write(&buf, m, files, key); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return buf.Bytes()
}

func goodBundle(t testing.TB) ([]byte, map[string][]byte) {
	c := testPayloads(PayloadRoot, PayloadVerity, PayloadUKI)
	return writeBundle(t, t.TempDir(), testManifest(true), c, testKey(1)), c
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestRoundTrip(t *testing.T) {
	key := testKey(1)
	for _, names := range [][]string{
		{PayloadRoot, PayloadVerity, PayloadUKI},
		{PayloadUKI}, // ESP-only
	} {
		t.Run(strings.Join(names, "+"), func(t *testing.T) {
			c := testPayloads(names...)
			b := writeBundle(t, t.TempDir(), testManifest(len(names) == 3), c, key)

			// The layout, checked independently of the reader.
			if string(b[:8]) != "ABBUNDLE" || binary.BigEndian.Uint32(b[8:]) != 1 {
				t.Fatalf("header %q", b[:16])
			}
			n := int(binary.BigEndian.Uint32(b[12:]))
			raw, sig := b[16:16+n], b[16+n:16+n+64]
			if !ed25519.Verify(pub(key), append([]byte("abboot bundle manifest v1\x00"), raw...), sig) {
				t.Fatal("signature does not verify over the documented message")
			}
			var want []byte
			wantM := testManifest(len(names) == 3)
			wantM.Format, wantM.KeyID = 1, KeyID(pub(key))
			for _, name := range names {
				want = append(want, c[name]...)
				wantM.Payloads = append(wantM.Payloads, Payload{Name: name, Size: int64(len(c[name])), SHA256: sum(c[name])})
			}
			if !bytes.Equal(b[16+n+64:], want) {
				t.Fatal("payload bytes are not the files back to back in order")
			}

			r, err := NewReader(bytes.NewReader(b), Keyring{pub(testKey(9)), pub(key)}, Policy("abboot-test", "2"))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Manifest, wantM) {
				t.Fatalf("manifest %+v, want %+v", r.Manifest, wantM)
			}
			for i, name := range names {
				if got, want := r.Offset(i), int64(16+n+64+bytes.Index(b[16+n+64:], c[name])); got != want {
					t.Errorf("Offset(%d) = %d, want %d", i, got, want)
				}
				p, pr, err := r.Next()
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(pr)
				if err != nil || p.Name != name || !bytes.Equal(got, c[name]) {
					t.Fatalf("payload %s: err %v, %d bytes equal %v", p.Name, err, len(got), bytes.Equal(got, c[name]))
				}
			}
			if _, _, err := r.Next(); err != io.EOF {
				t.Fatalf("Next after the last payload: %v, want io.EOF", err)
			}

			// ed25519 is deterministic, so a bundle is reproducible.
			if again := writeBundle(t, t.TempDir(), testManifest(len(names) == 3), c, key); !bytes.Equal(again, b) {
				t.Error("the same inputs gave a different bundle")
			}
		})
	}
}

// signRaw makes a bundle from a raw manifest, signed by key, followed by
// body.
func signRaw(t testing.TB, raw []byte, key ed25519.PrivateKey, body []byte) []byte {
	t.Helper()
	pre, err := preamble(raw, key)
	if err != nil {
		t.Fatal(err)
	}
	return append(pre, body...)
}

// signManifest makes a bundle whose manifest is good but for edit,
// signed by key 1, with the payloads as edit leaves them listed.
func signManifest(t testing.TB, edit func(m *Manifest)) []byte {
	c := testPayloads(PayloadRoot, PayloadVerity, PayloadUKI)
	m := testManifest(true)
	m.Format, m.KeyID = 1, KeyID(pub(testKey(1)))
	for _, n := range payloadOrder {
		m.Payloads = append(m.Payloads, Payload{Name: n, Size: int64(len(c[n])), SHA256: sum(c[n])})
	}
	edit(&m)
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	for _, p := range m.Payloads {
		body = append(body, bytes.Repeat([]byte{'x'}, int(max(p.Size, 0)))...)
	}
	return signRaw(t, raw, testKey(1), body)
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x01
	return b
}

func TestCorpus(t *testing.T) {
	good, c := goodBundle(t)
	n := int(binary.BigEndian.Uint32(good[12:]))
	body := 16 + n + 64 // where the payloads start
	rootEnd := body + len(c[PayloadRoot])
	verityEnd := rootEnd + len(c[PayloadVerity])
	compat := bytes.Index(good, []byte(`"abboot-test"`)) + 3
	rawGood := good[16 : 16+n]
	withLen := func(l uint32) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint32(b[12:], l)
		return b
	}
	trusted := Keyring{pub(testKey(1))}
	rewrite := func(old, new string) []byte {
		return signRaw(t, []byte(strings.Replace(string(rawGood), old, new, 1)), testKey(1), good[body:])
	}

	tests := []struct {
		name    string
		bundle  []byte
		keys    Keyring
		check   func(Manifest) error // default: Policy("abboot-test", "2")
		wantErr error
		wantMsg string // a part of the message that names the reason
	}{
		{name: "good", bundle: good},
		{name: "equal version", bundle: good, check: Policy("abboot-test", "2.0")},
		{name: "downgrade allowed", bundle: good, check: Policy("abboot-test", "3", AllowDowngrade(true))},
		{name: "fits its slots", bundle: good, check: Policy("abboot-test", "1", SlotSizes(map[string]int64{"root": 8192, "verity": 4096, "uki": 1 << 20}))},

		{name: "bad magic", bundle: flip(good, 0), wantErr: ErrBadHeader, wantMsg: "not an abboot bundle"},
		{name: "format 2", bundle: flip(good, 10), wantErr: ErrBadHeader, wantMsg: "format version 257"},
		{name: "empty", bundle: nil, wantErr: ErrTruncated, wantMsg: "in the header, after 0 of 16"},
		{name: "manifest length 0", bundle: withLen(0), wantErr: ErrBadManifest, wantMsg: "length 0"},
		{name: "manifest length over 64 KiB", bundle: withLen(MaxManifestSize + 1), wantErr: ErrBadManifest, wantMsg: "length 65537"},
		{name: "manifest length huge", bundle: withLen(1<<32 - 1), wantErr: ErrBadManifest, wantMsg: "length 4294967295"},

		{name: "manifest byte flipped", bundle: flip(good, compat), wantErr: ErrBadSignature, wantMsg: "with trusted key " + KeyID(trusted[0])},
		{name: "manifest made not JSON", bundle: flip(good, 16), wantErr: ErrBadSignature, wantMsg: "any of the 1 trusted keys"},
		{name: "signature byte flipped", bundle: flip(good, 16+n+7), wantErr: ErrBadSignature},
		{name: "manifest length off by one", bundle: withLen(uint32(n - 1)), wantErr: ErrBadSignature},
		{name: "unknown key", bundle: good, keys: Keyring{pub(testKey(2)), pub(testKey(3))}, wantErr: ErrUnknownKey, wantMsg: KeyID(trusted[0]) + " is not among the 2"},
		{name: "no trusted keys", bundle: good, keys: Keyring{}, wantErr: ErrUnknownKey},
		{name: "signed by another key than it names", bundle: signRaw(t, rawGood, testKey(2), good[body:]), keys: Keyring{pub(testKey(2))}, wantErr: ErrBadManifest, wantMsg: "but it was signed by key " + KeyID(pub(testKey(2)))},

		{name: "truncated in magic", bundle: good[:5], wantErr: ErrTruncated, wantMsg: "in the header, after 5 of 16"},
		{name: "truncated in length", bundle: good[:14], wantErr: ErrTruncated, wantMsg: "in the header"},
		{name: "truncated at manifest", bundle: good[:16], wantErr: ErrTruncated, wantMsg: "in the manifest, after 0"},
		{name: "truncated in manifest", bundle: good[:40], wantErr: ErrTruncated, wantMsg: "in the manifest, after 24"},
		{name: "truncated at signature", bundle: good[:16+n], wantErr: ErrTruncated, wantMsg: "in the signature, after 0 of 64"},
		{name: "truncated in signature", bundle: good[:16+n+63], wantErr: ErrTruncated, wantMsg: "in the signature, after 63 of 64"},
		{name: "truncated at root", bundle: good[:body], wantErr: ErrTruncated, wantMsg: "in payload root, after 0 of 8192"},
		{name: "truncated in root", bundle: good[:body+100], wantErr: ErrTruncated, wantMsg: "in payload root, after 100 of 8192"},
		{name: "truncated at verity", bundle: good[:rootEnd], wantErr: ErrTruncated, wantMsg: "in payload verity, after 0"},
		{name: "truncated in verity", bundle: good[:rootEnd+1], wantErr: ErrTruncated, wantMsg: "in payload verity, after 1"},
		{name: "truncated at uki", bundle: good[:verityEnd], wantErr: ErrTruncated, wantMsg: "in payload uki, after 0"},
		{name: "truncated in uki", bundle: good[:len(good)-1], wantErr: ErrTruncated, wantMsg: "in payload uki, after 3000 of 3001"},

		{name: "root byte flipped", bundle: flip(good, body+5000), wantErr: ErrHashMismatch, wantMsg: "root has sha256"},
		{name: "verity byte flipped", bundle: flip(good, rootEnd), wantErr: ErrHashMismatch, wantMsg: "verity has sha256"},
		{name: "uki last byte flipped", bundle: flip(good, len(good)-1), wantErr: ErrHashMismatch, wantMsg: "uki has sha256"},
		{name: "trailing data", bundle: append(bytes.Clone(good), 0), wantErr: ErrTrailingData},

		{name: "unknown member", bundle: signManifest(t, func(m *Manifest) { m.Payloads[1].Name = "kernel" }), wantErr: ErrBadManifest, wantMsg: `unknown payload "kernel"`},
		{name: "repeated member", bundle: signManifest(t, func(m *Manifest) { m.Payloads = append(m.Payloads, m.Payloads[2]) }), wantErr: ErrBadManifest, wantMsg: `"uki" is listed twice`},
		{name: "repeated out of order", bundle: signManifest(t, func(m *Manifest) { m.Payloads[2] = m.Payloads[0] }), wantErr: ErrBadManifest, wantMsg: `"root" is listed twice`},
		{name: "name with slash", bundle: signManifest(t, func(m *Manifest) { m.Payloads[2].Name = "EFI/uki" }), wantErr: ErrBadManifest, wantMsg: `"EFI/uki" contains "/"`},
		{name: "name with dotdot", bundle: signManifest(t, func(m *Manifest) { m.Payloads[2].Name = "..uki" }), wantErr: ErrBadManifest, wantMsg: `"..uki" contains ".."`},
		{name: "name dotdot slash", bundle: signManifest(t, func(m *Manifest) { m.Payloads[0].Name = "../root" }), wantErr: ErrBadManifest, wantMsg: `"../root" contains "/"`},
		{name: "empty name", bundle: signManifest(t, func(m *Manifest) { m.Payloads[0].Name = "" }), wantErr: ErrBadManifest, wantMsg: "empty name"},
		{name: "uki not last", bundle: signManifest(t, func(m *Manifest) { m.Payloads[0], m.Payloads[2] = m.Payloads[2], m.Payloads[0] }), wantErr: ErrBadManifest, wantMsg: `"verity" comes after "uki"`},
		{name: "no uki", bundle: signManifest(t, func(m *Manifest) { m.Payloads = m.Payloads[:2] }), wantErr: ErrBadManifest, wantMsg: `no "uki" payload`},
		{name: "root without verity", bundle: signManifest(t, func(m *Manifest) { m.Payloads = append(m.Payloads[:1], m.Payloads[2]) }), wantErr: ErrBadManifest, wantMsg: "root payload and roothash without verity payload"},
		{name: "root without roothash", bundle: signManifest(t, func(m *Manifest) { m.RootHash = "" }), wantErr: ErrBadManifest, wantMsg: "without roothash"},
		{name: "roothash without root", bundle: signManifest(t, func(m *Manifest) { m.Payloads = m.Payloads[2:] }), wantErr: ErrBadManifest, wantMsg: "roothash without root payload and verity payload"},
		{name: "no payloads", bundle: signManifest(t, func(m *Manifest) { m.Payloads = nil }), wantErr: ErrBadManifest, wantMsg: `no "uki"`},
		{name: "zero size", bundle: signManifest(t, func(m *Manifest) { m.Payloads[2].Size = 0 }), wantErr: ErrBadManifest, wantMsg: "size 0"},
		{name: "negative size", bundle: signManifest(t, func(m *Manifest) { m.Payloads[2].Size = -5 }), wantErr: ErrBadManifest, wantMsg: "size -5"},
		{name: "sha256 not hex", bundle: signManifest(t, func(m *Manifest) { m.Payloads[1].SHA256 = strings.Repeat("g", 64) }), wantErr: ErrBadManifest, wantMsg: "sha256"},
		{name: "sha256 upper case", bundle: signManifest(t, func(m *Manifest) { m.Payloads[1].SHA256 = strings.ToUpper(m.Payloads[1].SHA256) }), wantErr: ErrBadManifest, wantMsg: "lower-case"},
		{name: "roothash short", bundle: signManifest(t, func(m *Manifest) { m.RootHash = "abcd" }), wantErr: ErrBadManifest, wantMsg: `roothash "abcd"`},
		{name: "manifest format 2", bundle: signManifest(t, func(m *Manifest) { m.Format = 2 }), wantErr: ErrBadManifest, wantMsg: "format 2, want 1"},
		{name: "bad version", bundle: signManifest(t, func(m *Manifest) { m.Version = "2-rc1" }), wantErr: ErrBadManifest, wantMsg: `version "2-rc1"`},
		{name: "bad compatible", bundle: signManifest(t, func(m *Manifest) { m.Compatible = "a b" }), wantErr: ErrBadManifest, wantMsg: `compatible string "a b"`},
		{name: "bad created", bundle: signManifest(t, func(m *Manifest) { m.Created = "yesterday" }), wantErr: ErrBadManifest, wantMsg: "RFC 3339"},
		{name: "unknown field", bundle: rewrite(`"format":1`, `"format":1,"compression":"zstd"`), wantErr: ErrBadManifest, wantMsg: `unknown field "compression"`},
		{name: "data after the JSON", bundle: signRaw(t, append(bytes.Clone(rawGood), " {}"...), testKey(1), good[body:]), wantErr: ErrBadManifest, wantMsg: "data after the JSON"},
		{name: "size not an integer", bundle: rewrite(`"size":3001`, `"size":3001.5`), wantErr: ErrBadManifest, wantMsg: "size"},

		{name: "wrong compatible", bundle: good, check: Policy("abboot-other", "2"), wantErr: ErrIncompatible, wantMsg: `it is for "abboot-test", this system is "abboot-other"`},
		{name: "downgrade", bundle: good, check: Policy("abboot-test", "2.1"), wantErr: ErrDowngrade, wantMsg: "bundle version 2 is older than the running 2.1"},
		{name: "downgrade 1.10 to 1.9", bundle: signManifest(t, func(m *Manifest) { m.Version = "1.9" }), check: Policy("abboot-test", "1.10"), wantErr: ErrDowngrade},
		{name: "running version unknown", bundle: good, check: Policy("abboot-test", ""), wantErr: ErrDowngrade, wantMsg: "cannot compare"},
		{name: "root larger than its slot", bundle: good, check: Policy("abboot-test", "2", SlotSizes(map[string]int64{"root": 8191, "verity": 4096, "uki": 1 << 20})), wantErr: ErrTooLarge, wantMsg: "root is 8192 bytes, its slot holds 8191"},
		{name: "uki larger than the ESP", bundle: good, check: Policy("abboot-test", "2", SlotSizes(map[string]int64{"root": 1 << 20, "verity": 1 << 20, "uki": 3000})), wantErr: ErrTooLarge, wantMsg: "uki is 3001 bytes"},
		{name: "root on an ESP-only system", bundle: good, check: Policy("abboot-test", "2", SlotSizes(map[string]int64{"uki": 1 << 20})), wantErr: ErrIncompatible, wantMsg: "no place for one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := trusted
			if tt.keys != nil {
				keys = tt.keys
			}
			check := tt.check
			if check == nil {
				check = Policy("abboot-test", "2")
			}
			var checked int
			counted := func(m Manifest) error { checked++; return check(m) }
			got := map[string][]byte{}
			r, err := NewReader(bytes.NewReader(tt.bundle), keys, counted)
			if err == nil {
				if checked != 1 {
					t.Fatalf("check ran %d times, want once", checked)
				}
				for {
					var p Payload
					var pr io.Reader
					p, pr, err = r.Next()
					if err != nil {
						break
					}
					var b []byte
					if b, err = io.ReadAll(pr); err != nil {
						break
					}
					got[p.Name] = b
				}
				if err == io.EOF {
					err = nil
				}
			} else {
				if r != nil {
					t.Fatal("NewReader returned a Reader with its error")
				}
				// The policy must only ever see verified, valid manifests.
				policyErr := errors.Is(err, ErrIncompatible) || errors.Is(err, ErrDowngrade) || errors.Is(err, ErrTooLarge)
				if !policyErr && checked != 0 {
					t.Fatalf("check ran on a bundle refused with %v", err)
				}
			}
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if err != nil && (!strings.Contains(err.Error(), tt.wantMsg) || strings.Contains(err.Error(), "\n")) {
				t.Fatalf("error %q is not one line naming %q", err, tt.wantMsg)
			}
			if tt.wantErr == nil || errors.Is(err, ErrTrailingData) {
				if !reflect.DeepEqual(got, c) {
					t.Fatal("payloads differ from what was bundled")
				}
				return
			}
			// A payload handed out whole was checked; no payload after
			// a bad one is handed out at all.
			for _, name := range payloadOrder {
				if b, ok := got[name]; ok && !bytes.Equal(b, c[name]) {
					t.Errorf("payload %s was handed out whole but differs", name)
				}
			}
		})
	}
}

// TestSkipChecks makes sure a payload the installer does not read to its
// end is still checked before the next one or the end is reported.
func TestSkipChecks(t *testing.T) {
	good, c := goodBundle(t)
	n := int(binary.BigEndian.Uint32(good[12:]))
	bad := flip(good, 16+n+64+len(c[PayloadRoot])-1) // last byte of root
	r, err := NewReader(bytes.NewReader(bad), Keyring{pub(testKey(1))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, pr, err := r.Next(); err != nil {
		t.Fatal(err)
	} else if _, err := io.ReadFull(pr, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	for range 2 { // and it stays refused
		if _, _, err := r.Next(); !errors.Is(err, ErrHashMismatch) {
			t.Fatalf("Next after a skipped bad root: %v, want %v", err, ErrHashMismatch)
		}
	}

	r, err = NewReader(bytes.NewReader(good), Keyring{pub(testKey(1))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range payloadOrder {
		if _, _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next at the end after skipping everything: %v, want io.EOF", err)
	}
}

func TestWriteRefuses(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		m        Manifest
		payloads map[string]string
		key      ed25519.PrivateKey
		want     string
	}{
		{"unknown payload", testManifest(false), map[string]string{"uki": f, "initrd": f}, testKey(1), `unknown payload "initrd"`},
		{"slash", testManifest(false), map[string]string{"uki": f, "a/b": f}, testKey(1), `contains "/"`},
		{"missing file", testManifest(false), map[string]string{"uki": filepath.Join(dir, "nope")}, testKey(1), "no such file"},
		{"empty file", testManifest(false), map[string]string{"uki": empty}, testKey(1), `"uki" has size 0`},
		{"root without roothash", testManifest(false), map[string]string{"uki": f, "root": f, "verity": f}, testKey(1), "without roothash"},
		{"bad version", Manifest{Version: "v2", Compatible: "x"}, map[string]string{"uki": f}, testKey(1), `version "v2"`},
		{"short key", testManifest(false), map[string]string{"uki": f}, testKey(1)[:32], "signing key is 32 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Write(&buf, tt.m, tt.payloads, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Write: %v, want an error with %q", err, tt.want)
			}
			if buf.Len() != 0 {
				t.Fatalf("Write wrote %d bytes before it failed", buf.Len())
			}
		})
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1", "2", -1},
		{"2", "1", 1},
		{"2", "2", 0},
		{"1.9", "1.10", -1},
		{"1.10", "1.9", 1},
		{"2", "2.0", 0},
		{"2.0.0", "2", 0},
		{"2", "2.0.1", -1},
		{"1.01", "1.1", 0},
		{"010", "9", 1},
		{"2024.05", "2024.5.0", 0},
		{"99999999999999999999", "99999999999999999998", 1}, // beyond uint64
		{"0", "0.0", 0},
	}
	for _, tt := range tests {
		got, err := CompareVersions(tt.a, tt.b)
		if err != nil || got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d", tt.a, tt.b, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", ".", "1.", ".1", "1..2", "v2", "2-rc1", "-1", "+1", "1 ", "1.a", strings.Repeat("1", 65)} {
		if _, err := CompareVersions(bad, "1"); err == nil {
			t.Errorf("CompareVersions(%q, 1) accepted it", bad)
		}
		if _, err := CompareVersions("1", bad); err == nil {
			t.Errorf("CompareVersions(1, %q) accepted it", bad)
		}
	}
}

// TestPeekUKI reads the UKI payload out of a bundle file before the
// stream is consumed, for both layouts, and refuses one whose bytes are
// not the manifest's.
func TestPeekUKI(t *testing.T) {
	for _, names := range [][]string{{PayloadRoot, PayloadVerity, PayloadUKI}, {PayloadUKI}} {
		c := testPayloads(names...)
		b := writeBundle(t, t.TempDir(), testManifest(len(names) == 3), c, testKey(1))
		r, err := NewReader(bytes.NewReader(b), Keyring{pub(testKey(1))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.PeekUKI(bytes.NewReader(b))
		if err != nil || !bytes.Equal(got, c[PayloadUKI]) {
			t.Errorf("%v: PeekUKI: %v, equal %v", names, err, bytes.Equal(got, c[PayloadUKI]))
		}
		bad := bytes.Clone(b)
		bad[len(bad)-1] ^= 1 // the UKI is last
		if _, err := r.PeekUKI(bytes.NewReader(bad)); !errors.Is(err, ErrHashMismatch) {
			t.Errorf("%v: PeekUKI of a changed UKI: %v, want ErrHashMismatch", names, err)
		}
		if _, err := r.PeekUKI(bytes.NewReader(b[:len(b)-10])); !errors.Is(err, ErrTruncated) {
			t.Errorf("%v: PeekUKI of a truncated bundle: %v, want ErrTruncated", names, err)
		}
	}
}

// TestVouch: a payload the caller vouches for is not hashed (its bytes
// are the caller's to check), the others still are, and a vouched-for
// payload that is cut short is still refused.
func TestVouch(t *testing.T) {
	good, c := goodBundle(t)
	n := int(binary.BigEndian.Uint32(good[12:]))
	root := 16 + n + 64
	for _, tc := range []struct {
		name string
		at   int // the byte changed
		want error
	}{
		{"vouched", root + 5, nil},
		{"not vouched", root + len(c[PayloadRoot]) + 5, ErrHashMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(flip(good, tc.at)), Keyring{pub(testKey(1))}, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Vouch(PayloadRoot)
			for {
				_, _, err = r.Next()
				if err != nil {
					break
				}
			}
			if tc.want == nil && err != io.EOF || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("reading through: %v, want %v", err, tc.want)
			}
		})
	}
	r, err := NewReader(bytes.NewReader(good[:root+100]), Keyring{pub(testKey(1))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Vouch(PayloadRoot)
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Next(); !errors.Is(err, ErrTruncated) {
		t.Errorf("a truncated vouched-for root: %v, want %v", err, ErrTruncated)
	}
}

// TestSpool: a bundle read from a stream is spooled into a file that is
// then the whole bundle, which PeekUKI reads and Next reads on from; a
// stream cut short, or one that goes on after the last payload, is
// refused by Spool itself.
func TestSpool(t *testing.T) {
	good, c := goodBundle(t)
	for _, tc := range []struct {
		name   string
		stream []byte
		want   error
	}{
		{"good", good, nil},
		{"truncated", good[:len(good)-1], ErrTruncated},
		{"trailing", append(bytes.Clone(good), 0), ErrTrailingData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(io.MultiReader(bytes.NewReader(tc.stream)), Keyring{pub(testKey(1))}, nil)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Create(filepath.Join(t.TempDir(), "spool"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := r.Spool(f); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Spool: %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				return
			}
			if b, err := os.ReadFile(f.Name()); err != nil || !bytes.Equal(b, good) {
				t.Errorf("the spool file is not the bundle (%v)", err)
			}
			if uki, err := r.PeekUKI(f); err != nil || !bytes.Equal(uki, c[PayloadUKI]) {
				t.Errorf("PeekUKI of the spool: %v", err)
			}
			for _, name := range []string{PayloadRoot, PayloadVerity, PayloadUKI} {
				p, pr, err := r.Next()
				if err != nil || p.Name != name {
					t.Fatalf("Next: %v, %v; want %s", p, err, name)
				}
				if b, err := io.ReadAll(pr); err != nil || !bytes.Equal(b, c[name]) {
					t.Errorf("payload %s from the spool: %v", name, err)
				}
			}
			if _, _, err := r.Next(); err != io.EOF {
				t.Errorf("after the last payload: %v, want io.EOF", err)
			}
		})
	}
}
