// Package event writes abboot's console events: one line per event, the
// prefix "abboot: " then logfmt key=value pairs, starting with event=NAME.
// Operators and tests grep these lines, so keys are stable and values are
// quoted only when they must be. It does not buffer, rotate or filter.
package event

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Logger writes events to one writer, a line at a time.
type Logger struct {
	mu    sync.Mutex
	w     io.Writer
	tee   io.Writer
	since time.Time
}

// Tee makes every later event also go to w (the init's Kmsg), or to no
// second writer when w is nil. A failing second writer is ignored: the
// console has the line.
func (l *Logger) Tee(w io.Writer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tee = w
}

// Since makes every later event end with t_ms, the milliseconds since t,
// so a console log shows where the time went.
func (l *Logger) Since(t time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.since = t
}

// New returns a Logger writing to w.
func New(w io.Writer) *Logger { return &Logger{w: w} }

// Default writes to standard output, which is the console for PID 1.
var Default = New(os.Stdout)

// Log writes one event. kv alternates keys and values; a trailing key with
// no value gets an empty one.
func (l *Logger) Log(name string, kv ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.since.IsZero() {
		kv = append(kv[:len(kv):len(kv)], "t_ms", time.Since(l.since).Milliseconds())
	}
	line := Format(name, kv...) + "\n"
	io.WriteString(l.w, line)
	if l.tee != nil {
		io.WriteString(l.tee, line)
	}
}

// Log writes one event to Default.
func Log(name string, kv ...any) { Default.Log(name, kv...) }

// Error writes the event of a failure: kv, then result=error and err, the
// tail operators grep for. Every failure path logs through it.
func (l *Logger) Error(name string, err error, kv ...any) {
	l.Log(name, append(kv[:len(kv):len(kv)], "result", "error", "err", err)...)
}

// Error writes the event of a failure to Default.
func Error(name string, err error, kv ...any) { Default.Error(name, err, kv...) }

// Format renders one event line without a newline.
func Format(name string, kv ...any) string {
	var b strings.Builder
	b.WriteString("abboot: event=")
	b.WriteString(quote(name))
	for i := 0; i < len(kv); i += 2 {
		var v any = ""
		if i+1 < len(kv) {
			v = kv[i+1]
		}
		fmt.Fprintf(&b, " %v=%s", kv[i], quote(fmt.Sprint(v)))
	}
	return b.String()
}

// quote leaves a value bare when logfmt allows it, else Go-quotes it.
func quote(s string) string {
	if s == "" {
		return `""`
	}
	if strings.ContainsAny(s, " =\"\t\r\n\\") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// Parse splits a line written by Format back into its pairs; it returns
// false when the line is not an abboot event. Tests and the bench use it.
func Parse(line string) (map[string]string, bool) {
	i := strings.Index(line, "abboot: event=")
	if i < 0 {
		return nil, false
	}
	s := line[i+len("abboot: "):]
	m := map[string]string{}
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		k := s[:eq]
		s = s[eq+1:]
		var v string
		if strings.HasPrefix(s, `"`) {
			end := closingQuote(s)
			if end < 0 {
				return m, true
			}
			fmt.Sscanf(s[:end+1], "%q", &v)
			s = s[end+1:]
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			v, s = s[:sp], s[sp:]
		}
		m[k] = v
	}
	return m, true
}

// closingQuote returns the index of the quote that ends the Go-quoted
// string at the start of s, or -1.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}
