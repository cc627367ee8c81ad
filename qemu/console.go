package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
)

// tailLines is how many console lines an Expect error quotes.
const tailLines = 30

// escape matches the terminal control sequences OVMF's console driver emits
// around its output (ECMA-48 CSI sequences such as "\x1b[2J\x1b[01;01H" and
// two-byte escapes), plus carriage returns. They are dropped before matching so
// that patterns see the text a person sees.
var escape = regexp.MustCompile("\x1b(\\[[0-?]*[ -/]*[@-~]|[@-Z\\\\-_])|\r")

// normalize turns one raw console line (without its '\n') into the text that
// patterns are matched against.
func normalize(raw []byte) string {
	return escape.ReplaceAllString(string(raw), "")
}

// console splits a serial byte stream into lines and lets callers wait for
// the next line that matches a pattern. It is safe for one writer and any
// number of concurrent Expect callers.
type console struct {
	mu          sync.Mutex
	raw         strings.Builder // everything written, unmodified
	lines       []string        // complete lines, normalized
	next        int             // first line not yet consumed by an expect
	partial     []byte          // raw bytes of the unterminated last line
	partialUsed bool            // an expect consumed the unterminated line
	closed      bool            // no more output will come
	closeErr    error           // why the output ended (nil: clean exit)
	changed     chan struct{}   // closed and replaced on every change
}

func newConsole() *console {
	return &console{changed: make(chan struct{})}
}

// Write appends serial output. It never fails.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	c.raw.Write(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.partial = append(c.partial, p...)
			break
		}
		c.partial = append(c.partial, p[:i]...)
		c.endLine()
		p = p[i+1:]
	}
	c.notify()
	return n, nil
}

// endLine moves the unterminated line to the complete lines. A line whose
// beginning an ExpectPrompt already matched stays consumed.
func (c *console) endLine() {
	c.lines = append(c.lines, normalize(c.partial))
	if c.partialUsed {
		c.next = len(c.lines)
	}
	c.partial = c.partial[:0]
	c.partialUsed = false
}

func (c *console) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// close records that no more output will come; err says why (nil for a clean
// exit). An unterminated last line becomes a complete line.
func (c *console) close(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.endLine()
	}
	c.closed = true
	c.closeErr = err
	c.notify()
}

// String returns all output so far, unmodified.
func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.raw.String()
}

// match looks for the first unconsumed line that matches one of res, in
// stream order; among patterns matching the same line the first wins. With
// prompt set, the unterminated last line is tried too. On success the line
// and everything before it are consumed. c.mu must be held.
func (c *console) match(res []*regexp.Regexp, prompt bool) (int, []string, bool) {
	for ; c.next < len(c.lines); c.next++ {
		if i, m := matchLine(res, c.lines[c.next]); m != nil {
			c.next++
			return i, m, true
		}
	}
	if prompt && !c.partialUsed && len(c.partial) > 0 {
		if i, m := matchLine(res, normalize(c.partial)); m != nil {
			c.partialUsed = true
			return i, m, true
		}
	}
	return 0, nil, false
}

func matchLine(res []*regexp.Regexp, line string) (int, []string) {
	for i, re := range res {
		if m := re.FindStringSubmatch(line); m != nil {
			return i, m
		}
	}
	return 0, nil
}

// expect waits up to timeout for a line matching one of patterns. See
// VM.ExpectAny.
func (c *console) expect(timeout time.Duration, prompt bool, patterns []string) (int, []string, error) {
	if len(patterns) == 0 {
		return 0, nil, fmt.Errorf("expect: no pattern given")
	}
	res := make([]*regexp.Regexp, len(patterns))
	for i, p := range patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return 0, nil, fmt.Errorf("expect: %w", err)
		}
		res[i] = re
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		c.mu.Lock()
		i, m, ok := c.match(res, prompt)
		closed, closeErr, changed := c.closed, c.closeErr, c.changed
		c.mu.Unlock()
		switch {
		case ok:
			return i, m, nil
		case closed:
			if closeErr == nil {
				closeErr = errors.New("exit status 0")
			}
			return 0, nil, fmt.Errorf("qemu exited before a console line matched %s: %w\n%s", quote(patterns), closeErr, c.tail())
		}
		select {
		case <-changed:
		case <-timer.C:
			return 0, nil, fmt.Errorf("no console line matched %s within %v\n%s", quote(patterns), timeout, c.tail())
		}
	}
}

func quote(patterns []string) string {
	q := make([]string, len(patterns))
	for i, p := range patterns {
		q[i] = fmt.Sprintf("%q", p)
	}
	return strings.Join(q, " or ")
}

// tail returns the last lines of the console, normalized, for error
// messages.
func (c *console) tail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	lines := c.lines
	if len(c.partial) > 0 {
		lines = append(lines[:len(lines):len(lines)], normalize(c.partial))
	}
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "last %d console lines:", len(lines))
	for _, l := range lines {
		b.WriteString("\n| ")
		b.WriteString(l)
	}
	return b.String()
}
