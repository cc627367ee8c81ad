package slotstore

import (
	"errors"
	"testing"

	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
)

// FuzzDecodeVar: decodeVar never panics and fails only with ErrCorrupt;
// whatever decodes is a valid state that encodes back to the same bytes;
// and a valid state built from the input survives encode and decode.
func FuzzDecodeVar(f *testing.F) {
	for _, st := range states {
		b, err := encodeVar(st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte{})
	f.Add([]byte("ABS\x02"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeVar(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeVar(% x): %v, not ErrCorrupt", data, err)
			}
		} else {
			if err := st.Validate(); err != nil {
				t.Fatalf("decodeVar(% x) = invalid %+v: %v", data, st, err)
			}
			b, err := encodeVar(st)
			if err != nil || string(b) != string(data) {
				t.Fatalf("decodeVar(% x) = %+v, which encodes to % x, %v", data, st, b, err)
			}
		}
		if len(data) < 7 {
			return
		}
		st = slotstate.State{
			A:       slotstate.Attrs{Priority: int(data[0] % 16), Tries: int(data[1] % 16), Successful: data[2]&1 == 1},
			B:       slotstate.Attrs{Priority: int(data[3] % 16), Tries: int(data[4] % 16), Successful: data[5]&1 == 1},
			Counted: []slot.Slot{"", slot.A, slot.B}[data[6]%3],
		}
		b, err := encodeVar(st)
		if err != nil {
			t.Fatalf("encodeVar(%+v): %v", st, err)
		}
		if got, err := decodeVar(b); err != nil || got != st {
			t.Fatalf("decodeVar(encodeVar(%+v)) = %+v, %v", st, got, err)
		}
	})
}
