package event

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestKmsg: every event line is one <14> record, the console's writer gets
// the line too, the rate limit is off while the Kmsg is open and is
// restored by Close; a locked or absent setting is left alone.
func TestKmsg(t *testing.T) {
	for _, c := range []struct {
		name, before, during string
	}{
		{"ratelimit", "ratelimit\n", "on\n"},
		{"on", "on\n", "on\n"},
		{"off", "off\n", "off\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			dev, sysctl := filepath.Join(dir, "kmsg"), filepath.Join(dir, "printk_devkmsg")
			if err := os.WriteFile(dev, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(sysctl, []byte(c.before), 0o644); err != nil {
				t.Fatal(err)
			}
			k, err := openKmsg(dev, sysctl)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(sysctl); string(b) != c.during {
				t.Errorf("printk_devkmsg while open = %q, want %q", b, c.during)
			}
			var console bytes.Buffer
			l := New(&console)
			l.Tee(k)
			l.Log("select", "running", "a", "reason", "two words")
			l.Error("verity", os.ErrNotExist, "slot", "b")
			if err := k.Close(); err != nil {
				t.Fatal(err)
			}
			want := "<14>abboot: event=select running=a reason=\"two words\"<14>abboot: event=verity slot=b result=error err=\"file does not exist\""
			if b, _ := os.ReadFile(dev); string(b) != want {
				t.Errorf("kmsg got\n%q\nwant\n%q", b, want)
			}
			if got := console.String(); got != "abboot: event=select running=a reason=\"two words\"\nabboot: event=verity slot=b result=error err=\"file does not exist\"\n" {
				t.Errorf("console got %q", got)
			}
			if b, _ := os.ReadFile(sysctl); string(b) != c.before {
				t.Errorf("printk_devkmsg after Close = %q, want %q", b, c.before)
			}
		})
	}
}

func TestKmsgMissing(t *testing.T) {
	if _, err := openKmsg(filepath.Join(t.TempDir(), "none"), "/nonexistent"); err == nil {
		t.Error("openKmsg of a missing device succeeded")
	}
}
