package bootparam

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		in      string
		want    Params
		wantErr bool
	}{
		{"console=ttyS0 panic=10", Params{Init: DefaultInit, Panic: 10, VerityMode: "panic_on_corruption", CrashLimit: 3}, false},
		{"abboot.roothash=" + strings.ToUpper(hash) + " abboot.handover=b abboot.kexec=0 abboot.watchdog=30 abboot.init=/bbin/demo abboot.verity=eio",
			Params{RootHash: hash, Handover: "b", NoKexec: true, Watchdog: 30, Init: "/bbin/demo", CrashLimit: 3}, false},
		{"abboot.verity=restart abboot.crash-limit=0 abboot.test-crash=1", Params{Init: DefaultInit, VerityMode: "restart_on_corruption", TestCrash: 1}, false},
		{"abboot.crash-limit=2", Params{Init: DefaultInit, VerityMode: "panic_on_corruption", CrashLimit: 2}, false},
		{"abboot.crash-limit=4", Params{}, true},
		{"abboot.crash-limit=-1", Params{}, true},
		{"abboot.test-crash=x", Params{}, true},
		{"abboot.kexec=1", Params{Init: DefaultInit, VerityMode: "panic_on_corruption", CrashLimit: 3}, false},
		{`quiet "abboot.init=/a b"`, Params{Init: "/a b", VerityMode: "panic_on_corruption", CrashLimit: 3}, false},
		{"abboot.verity=sometimes", Params{}, true},
		{"abboot.handover=c", Params{}, true},
		{"abboot.roothash=xyz", Params{}, true},
		{"abboot.roothash=" + hash[:62], Params{}, true},
		{"abboot.watchdog=-1", Params{}, true},
		{"abboot.watchdog=ten", Params{}, true},
		{"abboot.kexec=maybe", Params{}, true},
		{"abboot.init=sbin/init", Params{}, true},
	} {
		got, err := Parse(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("Parse(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && got != tc.want {
			t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestFields(t *testing.T) {
	got := Fields(` a  b="c d" "e f"` + "\n")
	want := []string{"a", "b=c d", "e f"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Fields = %q, want %q", got, want)
	}
}

func TestWithHandover(t *testing.T) {
	for _, tc := range []struct{ in, slot, want string }{
		{"console=ttyS0 panic=10\x00", "b", "console=ttyS0 panic=10 abboot.handover=b"},
		{"abboot.handover=a quiet", "b", "quiet abboot.handover=b"},
		{"", "a", "abboot.handover=a"},
	} {
		if got := WithHandover(tc.in, tc.slot); got != tc.want {
			t.Errorf("WithHandover(%q, %q) = %q, want %q", tc.in, tc.slot, got, tc.want)
		}
		p, err := Parse(WithHandover(tc.in, tc.slot))
		if err != nil || p.Handover != tc.slot {
			t.Errorf("Parse(WithHandover(%q)) = %+v, %v", tc.in, p, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("console=ttyS0 abboot.handover=a abboot.watchdog=5 panic=-1")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		if p.Handover != "" && p.Handover != "a" && p.Handover != "b" {
			t.Fatalf("Parse(%q) accepted handover %q", s, p.Handover)
		}
		if p.Watchdog < 0 || !strings.HasPrefix(p.Init, "/") {
			t.Fatalf("Parse(%q) = %+v", s, p)
		}
	})
}
