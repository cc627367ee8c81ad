package event

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFormatParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		kv   []any
		want string
	}{
		{"start", []any{"running", "a", "elapsed_ms", 41}, "abboot: event=start running=a elapsed_ms=41"},
		{"repair", []any{"what", "Boot0001 \"abboot A\""}, `abboot: event=repair what="Boot0001 \"abboot A\""`},
		{"rescue", []any{"reason"}, `abboot: event=rescue reason=""`},
	} {
		got := Format(tc.name, tc.kv...)
		if got != tc.want {
			t.Errorf("Format = %s, want %s", got, tc.want)
		}
		m, ok := Parse("[    1.2] " + got)
		if !ok || m["event"] != tc.name {
			t.Fatalf("Parse(%q) = %v, %v", got, m, ok)
		}
		for i := 0; i+1 < len(tc.kv); i += 2 {
			k := tc.kv[i].(string)
			if want := fmtValue(tc.kv[i+1]); m[k] != want {
				t.Errorf("Parse: %s=%q, want %q", k, m[k], want)
			}
		}
	}
}

func fmtValue(v any) string {
	var b bytes.Buffer
	New(&b).Log("x", "k", v)
	m, _ := Parse(b.String()[:b.Len()-1])
	return m["k"]
}

func TestParseNotEvent(t *testing.T) {
	if _, ok := Parse("abboot-demo: up version=1"); ok {
		t.Error("Parse accepted a line without an event")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(`abboot: event=select running=a best=b reason="x y"`)
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := Parse(s)
		if !ok {
			return
		}
		// Whatever parsed must survive a round trip through Format.
		kv := []any{}
		for k, v := range m {
			if k != "event" && k != "" && !bytes.ContainsAny([]byte(k), " =\"\t\r\n\\") {
				kv = append(kv, k, v)
			}
		}
		if _, ok := m["event"]; !ok {
			return
		}
		m2, ok := Parse(Format(m["event"], kv...))
		if !ok {
			t.Fatalf("Format output did not parse")
		}
		for i := 0; i < len(kv); i += 2 {
			if m2[kv[i].(string)] != kv[i+1].(string) {
				t.Fatalf("round trip of %q: %v != %v", s, m2, m)
			}
		}
	})
}

func TestSince(t *testing.T) {
	var b bytes.Buffer
	l := New(&b)
	l.Log("a", "k", "v")
	l.Since(time.Now().Add(-1500 * time.Millisecond))
	l.Log("b", "k", "v")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if m, _ := Parse(lines[0]); m["t_ms"] != "" {
		t.Errorf("t_ms before Since: %q", lines[0])
	}
	m, _ := Parse(lines[1])
	if ms, err := strconv.Atoi(m["t_ms"]); err != nil || ms < 1500 || ms > 60000 || m["k"] != "v" {
		t.Errorf("after Since: %q", lines[1])
	}
}

// TestError: a failure's event is the line Log writes with the result=error
// and err tail, t_ms still last.
func TestError(t *testing.T) {
	for _, tc := range []struct {
		kv   []any
		want string
	}{
		{nil, `abboot: event=esp result=error err="no ESP found"`},
		{[]any{"dev", "/dev/vda1"}, `abboot: event=esp dev=/dev/vda1 result=error err="no ESP found"`},
	} {
		var b bytes.Buffer
		New(&b).Error("esp", errors.New("no ESP found"), tc.kv...)
		if got := strings.TrimSuffix(b.String(), "\n"); got != tc.want {
			t.Errorf("Error(%v) = %s, want %s", tc.kv, got, tc.want)
		}
	}
	var b bytes.Buffer
	l := New(&b)
	l.Since(time.Now())
	l.Error("esp", errors.New("gone"))
	line := strings.TrimSuffix(b.String(), "\n")
	if m, _ := Parse(line); !strings.HasSuffix(line, " result=error err=gone t_ms="+m["t_ms"]) || m["t_ms"] == "" {
		t.Errorf("with Since: %q", b.String())
	}
}

func TestKmsg(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmsg")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	l := New(Kmsg{Path: path})
	l.Log("start", "slot", "b")
	l.Log("crash", "slot", "b", "reason", "x y")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "<7>abboot: event=start slot=b\n<7>abboot: event=crash slot=b reason=\"x y\"\n"
	if string(got) != want {
		t.Errorf("kmsg got %q, want %q", got, want)
	}
	// A missing device is not an error: the console line is the event.
	if n, err := (Kmsg{Path: filepath.Join(t.TempDir(), "none", "kmsg")}).Write([]byte("x\n")); n != 2 || err != nil {
		t.Errorf("Write to a missing device = %d, %v; want 2, nil", n, err)
	}
}
