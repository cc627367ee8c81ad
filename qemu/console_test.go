package qemu

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

type step struct {
	prompt  bool
	res     []string
	wantIdx int
	want    []string // nil: an error is expected
}

func TestConsoleExpect(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		close  bool
		steps  []step
	}{{
		name:   "submatches and CRLF",
		chunks: []string{"abboot: event=select running=a best=b tries=3->2\r\n"},
		steps: []step{{
			res:  []string{`^abboot: event=select running=(\w) best=(\w) tries=(\S+)$`},
			want: []string{"abboot: event=select running=a best=b tries=3->2", "a", "b", "3->2"},
		}},
	}, {
		name:   "line split across writes",
		chunks: []string{"BdsD", "xe: loading Boot0001\r", "\nnext\n"},
		steps: []step{
			{res: []string{`^BdsDxe: loading (Boot\d+)$`}, want: []string{"BdsDxe: loading Boot0001", "Boot0001"}},
			{res: []string{`^next$`}, want: []string{"next"}},
		},
	}, {
		name:   "OVMF escape sequences are dropped",
		chunks: []string{"\x1b[2J\x1b[01;01H\x1b[=3h\x1b[01;01HUEFI Interactive Shell v2.2\r\n\x1b[1m\x1b[33m\x1b[40mMapping table\x1b[0m\r\n"},
		steps: []step{
			{res: []string{`^UEFI Interactive Shell v(\S+)$`}, want: []string{"UEFI Interactive Shell v2.2", "2.2"}},
			{res: []string{`^Mapping table$`}, want: []string{"Mapping table"}},
		},
	}, {
		name:   "matched lines and those before are consumed",
		chunks: []string{"x=1\nx=2\nx=3\n"},
		steps: []step{
			{res: []string{`x=2`}, want: []string{"x=2"}},
			{res: []string{`x=(\d)`}, want: []string{"x=3", "3"}},
			{res: []string{`x=(\d)`}},
		},
	}, {
		name:   "unterminated line is not a line for Expect",
		chunks: []string{"login: "},
		steps:  []step{{res: []string{`login:`}}},
	}, {
		name:   "ExpectPrompt matches the unterminated line and consumes it",
		chunks: []string{"boot\n\x1b[1mShell> \x1b[0m"},
		steps: []step{
			{prompt: true, res: []string{`Shell> $`}, want: []string{"Shell> "}},
			{prompt: true, res: []string{`Shell>`}},
		},
	}, {
		name:   "ExpectPrompt prefers earlier complete lines",
		chunks: []string{"# first\n# "},
		steps: []step{
			{prompt: true, res: []string{`^# (.*)$`}, want: []string{"# first", "first"}},
			{prompt: true, res: []string{`^# (.*)$`}, want: []string{"# ", ""}},
		},
	}, {
		name:   "ExpectAny: first line wins, then lowest index",
		chunks: []string{"a panic here\nkernel panic\n"},
		steps: []step{
			{res: []string{`kernel panic`, `panic`, `a panic`}, wantIdx: 1, want: []string{"panic"}},
			{res: []string{`^never$`, `kernel (panic)`}, wantIdx: 1, want: []string{"kernel panic", "panic"}},
		},
	}, {
		name:   "close turns the unterminated line into a line",
		chunks: []string{"reboot: Power down"},
		close:  true,
		steps: []step{
			{res: []string{`^reboot: (.*)$`}, want: []string{"reboot: Power down", "Power down"}},
			{res: []string{`anything`}},
		},
	}, {
		name:   "bad pattern",
		chunks: []string{"x\n"},
		steps:  []step{{res: []string{`(`}}},
	}, {
		name:  "no pattern",
		steps: []step{{}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConsole()
			for _, ch := range tc.chunks {
				if n, err := c.Write([]byte(ch)); n != len(ch) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", ch, n, err)
				}
			}
			if tc.close {
				c.close(nil)
			}
			for i, s := range tc.steps {
				idx, m, err := c.expect(0, s.prompt, s.res)
				if s.want == nil {
					if err == nil {
						t.Errorf("step %d: expect(%q) = %d, %q; want error", i, s.res, idx, m)
					}
					continue
				}
				if err != nil || idx != s.wantIdx || !slices.Equal(m, s.want) {
					t.Errorf("step %d: expect(%q) = %d, %q, %v; want %d, %q", i, s.res, idx, m, err, s.wantIdx, s.want)
				}
			}
			if got, want := c.String(), strings.Join(tc.chunks, ""); got != want {
				t.Errorf("String() = %q, want the raw output %q", got, want)
			}
		})
	}
}

// TestConsoleWaits checks that Expect blocks until a matching line arrives
// from another goroutine (run with -race).
func TestConsoleWaits(t *testing.T) {
	c := newConsole()
	go func() {
		for i := range 50 {
			fmt.Fprintf(c, "line %d\r\n", i)
			time.Sleep(time.Millisecond)
		}
		c.Write([]byte("Shell> "))
		time.Sleep(10 * time.Millisecond)
		c.close(ErrKilled)
	}()
	for _, want := range []string{"7", "49"} {
		m, err := expect1(c, false, `^line (`+want+`)$`, 10*time.Second)
		if err != nil || m[1] != want {
			t.Fatalf("waiting for line %s: got %q, %v", want, m, err)
		}
	}
	if _, err := expect1(c, true, `Shell> `, 10*time.Second); err != nil {
		t.Fatalf("waiting for prompt: %v", err)
	}
	_, err := expect1(c, false, `never`, 10*time.Second)
	if !errors.Is(err, ErrKilled) || !strings.Contains(err.Error(), "| line 49") {
		t.Errorf("after close: got %v, want an error wrapping ErrKilled that quotes the last lines", err)
	}
}

func expect1(c *console, prompt bool, re string, timeout time.Duration) ([]string, error) {
	_, m, err := c.expect(timeout, prompt, []string{re})
	return m, err
}

func TestConsoleTimeoutQuotesTail(t *testing.T) {
	c := newConsole()
	for i := range 100 {
		fmt.Fprintf(c, "line %03d\n", i)
	}
	c.Write([]byte("partial"))
	start := time.Now()
	_, err := expect1(c, false, `never`, 50*time.Millisecond)
	if err == nil {
		t.Fatal("expect succeeded, want timeout")
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("expect returned after %v, before its timeout", d)
	}
	msg := err.Error()
	if !strings.Contains(msg, "| partial") || !strings.Contains(msg, "| line 071") || strings.Contains(msg, "line 070") {
		t.Errorf("timeout error should quote exactly the last %d lines (line 071..099 and the partial line), got:\n%s", tailLines, msg)
	}
}

// FuzzConsole checks that how output is split into writes does not change
// the lines Expect sees, and that nothing panics.
func FuzzConsole(f *testing.F) {
	f.Add([]byte("BdsDxe: loading Boot0001\r\n\x1b[2Jx\n"), uint8(3))
	f.Add([]byte("a\nb\r\n\nShell> "), uint8(1))
	f.Add([]byte("\x1b[01;01"), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		whole, split := newConsole(), newConsole()
		whole.Write(data)
		size := int(chunk)%7 + 1
		for p := data; len(p) > 0; {
			n := min(size, len(p))
			split.Write(p[:n])
			p = p[n:]
		}
		whole.close(nil)
		split.close(nil)
		if !slices.Equal(whole.lines, split.lines) {
			t.Fatalf("lines differ: whole %q, split into %d-byte writes %q", whole.lines, size, split.lines)
		}
		if got := split.String(); got != string(data) {
			t.Fatalf("String() = %q, want %q", got, data)
		}
		if n := strings.Count(string(data), "\n"); len(whole.lines) < n || len(whole.lines) > n+1 {
			t.Fatalf("%d lines from %d newlines", len(whole.lines), n)
		}
	})
}
