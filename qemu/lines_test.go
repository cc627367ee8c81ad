package qemu

import (
	"fmt"
	"slices"
	"testing"
)

// TestLineWriter feeds console output in pieces that split lines and line
// endings anywhere and checks that each complete line comes out once, raw
// but for its ending, and that an unterminated one is held back.
func TestLineWriter(t *testing.T) {
	const out = "BdsDxe: loading\r\n\x1b[2Jabboot: event=start\r\n\r\npartial\rover\nno newline"
	want := []string{"BdsDxe: loading", "\x1b[2Jabboot: event=start", "", "partial\rover"}
	for _, size := range []int{1, 2, 3, 7, len(out)} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var got []string
			w := LineWriter(func(line string) { got = append(got, line) })
			for b := []byte(out); len(b) > 0; b = b[min(size, len(b)):] {
				if n, err := w.Write(b[:min(size, len(b))]); n != min(size, len(b)) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("lines %q, want %q", got, want)
			}
		})
	}
}
