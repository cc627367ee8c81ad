package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"reflect"
	"testing"
)

// FuzzNewReader feeds arbitrary bytes to the reader, trusting one fixed
// key. Nothing may panic, and since a fuzzer cannot forge an ed25519
// signature, a manifest that is accepted must be one of the seeds'. When
// the whole stream is accepted (Next ends with io.EOF), every payload
// handed out must match the manifest's size and hash, and the payloads
// must have used up exactly the input.
func FuzzNewReader(f *testing.F) {
	key := testKey(1)
	var seeds []Manifest
	for _, names := range [][]string{{PayloadRoot, PayloadVerity, PayloadUKI}, {PayloadUKI}} {
		b := writeBundle(f, f.TempDir(), testManifest(len(names) == 3), testPayloads(names...), key)
		r, err := NewReader(bytes.NewReader(b), Keyring{pub(key)}, nil)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, r.Manifest)
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(flip(b, 20))
	}
	f.Add([]byte("ABBUNDLE\x00\x00\x00\x01\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.NewReader(data)
		r, err := NewReader(in, Keyring{pub(key)}, nil)
		if err != nil {
			return
		}
		known := false
		for _, m := range seeds {
			known = known || reflect.DeepEqual(r.Manifest, m)
		}
		if !known {
			t.Fatalf("accepted a manifest no seed has: %+v", r.Manifest)
		}
		for {
			p, pr, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
			b, err := io.ReadAll(pr)
			if err != nil {
				return
			}
			s := sha256.Sum256(b)
			if int64(len(b)) != p.Size || hex.EncodeToString(s[:]) != p.SHA256 {
				t.Fatalf("payload %s handed out whole with %d bytes, sha256 %x; manifest says %d, %s", p.Name, len(b), s, p.Size, p.SHA256)
			}
		}
		if in.Len() != 0 {
			t.Fatalf("accepted with %d bytes left over", in.Len())
		}
	})
}
