package qemu

import (
	"bytes"
	"io"
	"strings"
)

// LineWriter returns a writer for Options.Echo that calls fn with each
// complete console line as it comes, without its "\n" and trailing "\r".
// Unlike Expect's lines, the text is raw: control sequences and inner
// carriage returns are left for fn to keep, strip or skip. A last line
// without its newline is held back. Echo is written by one goroutine, so fn
// is never called concurrently.
func LineWriter(fn func(line string)) io.Writer { return &lineWriter{fn: fn} }

type lineWriter struct {
	fn      func(string)
	partial []byte // the unterminated last line
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			return n, nil
		}
		w.partial = append(w.partial, p[:i]...)
		w.fn(strings.TrimRight(string(w.partial), "\r"))
		w.partial = w.partial[:0]
		p = p[i+1:]
	}
}
