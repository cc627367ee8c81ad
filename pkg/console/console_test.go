package console

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	var got []string
	c := &Console{
		Name:     "t",
		In:       strings.NewReader("echo hello world\n\nhalt now\nfalse\nno-such-program\n"),
		Out:      &out,
		Builtins: map[string]func([]string){"halt": func(a []string) { got = a }},
	}
	c.Run()
	want := "t: ready\nhello world\nt: exit cmd=echo status=0\nt: ready\nt: ready\nt: ready\nt: exit cmd=false status=1\nt: ready\n"
	if s := out.String(); !strings.HasPrefix(s, want) || !strings.Contains(s, "t: exit cmd=no-such-program status=-1") || !strings.HasSuffix(s, "t: ready\n") {
		t.Errorf("console output:\n%s\nwant it to start with:\n%s", s, want)
	}
	if len(got) != 1 || got[0] != "now" {
		t.Errorf("builtin got %q", got)
	}
}
