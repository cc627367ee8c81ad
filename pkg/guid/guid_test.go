package guid

import (
	"bytes"
	"testing"
)

func TestParseString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		disk []byte
	}{
		// The ESP type as it appears in a GPT partition entry.
		{"c12a7328-f81f-11d2-ba4b-00a0c93ec93b", []byte{0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b}},
		{"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", []byte{0xe3, 0xbc, 0x68, 0x4f, 0xcd, 0xe8, 0xb1, 0x4d, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7, 0x09}},
	} {
		g, err := Parse(tc.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.in, err)
		}
		if !bytes.Equal(g[:], tc.disk) {
			t.Errorf("Parse(%q) = % x, want % x", tc.in, g[:], tc.disk)
		}
		if got, want := g.String(), string(bytes.ToLower([]byte(tc.in))); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{"", "c12a7328f81f11d2ba4b00a0c93ec93b", "c12a7328-f81f-11d2-ba4b-00a0c93ec93", "g12a7328-f81f-11d2-ba4b-00a0c93ec93b", "c12a7328-f81f-11d2-ba4b_00a0c93ec93b"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) succeeded, want error", in)
		}
	}
}

func TestFromBigEndian(t *testing.T) {
	b := []byte{0x5f, 0x1c, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d}
	if got, want := FromBigEndian(b).String(), "5f1c0001-0203-0405-0607-08090a0b0c0d"; got != want {
		t.Errorf("FromBigEndian = %s, want %s", got, want)
	}
}

func TestNew(t *testing.T) {
	a, err := New()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New()
	if a == b || a.IsZero() {
		t.Errorf("New returned %s and %s", a, b)
	}
	if s := a.String(); s[14] != '4' {
		t.Errorf("New() = %s, want version 4", s)
	}
	if r, err := Parse(a.String()); err != nil || r != a {
		t.Errorf("round trip of %s = %s, %v", a, r, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
	f.Fuzz(func(t *testing.T, s string) {
		g, err := Parse(s)
		if err != nil {
			return
		}
		if r, err := Parse(g.String()); err != nil || r != g {
			t.Fatalf("round trip of %q: %s, %v", s, r, err)
		}
	})
}
